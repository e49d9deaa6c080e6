//! Settings of a connection, its opening handshake, and its buffers.

use std::sync::Arc;
use std::time::Duration;

use sockeye_proto::extension::DeflateConfig;

use crate::ProxyConfig;

/// How a [`WebSocket`](crate::WebSocket) is set up and behaves. One struct
/// for both roles; each field says which role reads it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Protocol limits and the close timeout (both roles).
    pub protocol: sockeye_proto::Config,
    /// permessage-deflate: offered (client) or accepted (server) when `Some`.
    /// Default `None`: compression costs CPU and ~300 KiB per connection with
    /// context takeover; turn it on where bandwidth matters more.
    pub deflate: Option<DeflateConfig>,
    /// Subprotocols: the client offers them in order; the server picks the
    /// first of the client's list that appears here.
    pub protocols: Vec<String>,
    /// Extra headers: sent with the client's request, or added to the
    /// server's 101 response.
    pub headers: http::HeaderMap,
    /// Bytes asked of the socket per read. Default 16 KiB. A connection
    /// waiting for input holds no read buffer whatever this is (it goes
    /// back to a per-thread spare); a frame in progress reserves room for
    /// its whole payload (up to 1 MiB) beyond this. 128 KiB halved the
    /// reads of 64 KiB echoes but saved no CPU (docs/BENCHMARKS.md, B).
    pub read_buffer_size: usize,
    /// `feed` writes to the socket once this many bytes are queued, instead
    /// of waiting for a flush. Default 64 KiB: many small messages leave in
    /// one write, and the queue never grows far.
    pub write_buffer_high: usize,
    /// The most bytes that may wait in the outgoing queue; `try_send` refuses
    /// past it and `send`/`feed` wait. Default 16 MiB, one maximal message.
    pub max_write_buffer: usize,
    /// The whole opening handshake must finish within this. Default 10 s;
    /// a peer that dribbles its request in slower is dropped.
    pub handshake_timeout: Duration,
    /// The largest request or response head accepted. Default 16 KiB;
    /// bigger heads are refused with 431.
    pub max_header_size: usize,
    /// TLS for `wss://` (client). Default: the webpki roots plus the
    /// platform's roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Disable Nagle's algorithm on TCP sockets we open. Default true.
    pub nodelay: bool,
    /// Reach the server through this proxy, HTTP `CONNECT` or SOCKS5
    /// (client). Default `None`: connect directly. No environment variable
    /// is read; the caller decides whether `HTTPS_PROXY` and the like apply.
    pub proxy: Option<ProxyConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            protocol: sockeye_proto::Config::default(),
            deflate: None,
            protocols: Vec::new(),
            headers: http::HeaderMap::new(),
            read_buffer_size: 16 * 1024,
            write_buffer_high: 64 * 1024,
            max_write_buffer: 16 << 20,
            handshake_timeout: Duration::from_secs(10),
            max_header_size: 16 * 1024,
            tls: None,
            nodelay: true,
            proxy: None,
        }
    }
}

impl Config {
    /// Enables permessage-deflate with these settings.
    pub fn deflate(mut self, deflate: DeflateConfig) -> Self {
        self.deflate = Some(deflate);
        self
    }

    /// Sets the subprotocols.
    pub fn protocols<I: IntoIterator<Item = S>, S: Into<String>>(mut self, protocols: I) -> Self {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a header to the request (client) or the 101 response (server).
    pub fn header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the largest message accepted.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.protocol.max_message_size = bytes;
        self.protocol.max_frame_size = bytes;
        self
    }

    /// Sets the opening-handshake timeout.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the TLS client configuration for `wss://`.
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Connects through this proxy.
    pub fn proxy(mut self, proxy: ProxyConfig) -> Self {
        self.proxy = Some(proxy);
        self
    }
}
