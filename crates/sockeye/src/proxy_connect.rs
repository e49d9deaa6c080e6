//! Reaching the server through a proxy: HTTP `CONNECT` (RFC 9110 section
//! 9.3.6, Basic proxy authentication) or SOCKS5 (RFC 1928, username and
//! password from RFC 1929).
//!
//! ```text
//!  connect_with ─► TCP to the proxy ─► CONNECT host:port ─► tunnel ─► TLS (wss) ─► opening handshake
//! ```
//!
//! The proxy only opens a byte tunnel; TLS for `wss://` runs end to end
//! through it, so the proxy sees neither the messages nor the certificate
//! checks. Set [`Config::proxy`](crate::Config::proxy) to use one; nothing is
//! read from the environment (`HTTPS_PROXY` and the like): the caller decides.
//!
//! A proxy that refuses comes back as [`Error::Io`] whose inner error
//! (`std::io::Error::get_ref`) is a [`ProxyError`] saying what it answered.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

/// Which protocol the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyKind {
    /// An HTTP proxy that supports `CONNECT` (`http://`). The proxy resolves
    /// the server's name.
    Http,
    /// SOCKS5 with the server's name resolved here and its address sent to
    /// the proxy (`socks5://`, as curl does).
    Socks5,
    /// SOCKS5 with the name sent to the proxy, which resolves it
    /// (`socks5h://`): for names only the proxy's side of the network knows.
    Socks5h,
}

/// A username and password for the proxy (HTTP Basic, or SOCKS5
/// username/password). `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAuth {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyAuth")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Where the proxy is and how to talk to it. Parse one from a URL
/// (`http://user:pass@proxy:3128`, `socks5://127.0.0.1:1080`) or build it
/// with [`ProxyConfig::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The protocol.
    pub kind: ProxyKind,
    /// The proxy's host name or IP address (no brackets around IPv6).
    pub host: String,
    /// The proxy's port.
    pub port: u16,
    /// Credentials, sent only when present.
    pub auth: Option<ProxyAuth>,
}

impl ProxyConfig {
    /// A proxy at `host:port` without credentials.
    pub fn new(kind: ProxyKind, host: impl Into<String>, port: u16) -> Self {
        ProxyConfig {
            kind,
            host: host.into(),
            port,
            auth: None,
        }
    }

    /// Sets the credentials.
    pub fn auth(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some(ProxyAuth {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Parses `http://[user:pass@]host[:port]`, `socks5://…` or
    /// `socks5h://…`. Credentials may be percent-encoded. The port defaults
    /// to 80 for `http` and 1080 for SOCKS5.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |reason| Error::Url {
            url: url.to_string(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a proxy URL"))?;
        let (kind, default_port) = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => (ProxyKind::Http, 80),
            Some("socks5") => (ProxyKind::Socks5, 1080),
            Some("socks5h") => (ProxyKind::Socks5h, 1080),
            Some("https") => return Err(bad("https:// proxies are not supported; use http://")),
            Some(_) => {
                return Err(bad(
                    "the proxy scheme must be http://, socks5:// or socks5h://",
                ))
            }
            None => return Err(bad("missing http://, socks5:// or socks5h://")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("a proxy URL has no path"));
        }
        let authority = uri.authority().ok_or_else(|| bad("missing proxy host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("missing proxy host"));
        }
        let mut proxy = ProxyConfig::new(kind, host, uri.port_u16().unwrap_or(default_port));
        if let Some((userinfo, _)) = authority.as_str().rsplit_once('@') {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let decode = |s| {
                percent_decode(s)
                    .ok_or_else(|| bad("bad percent-encoding in the proxy credentials"))
            };
            proxy = proxy.auth(decode(user)?, decode(pass)?);
        }
        Ok(proxy)
    }
}

impl FromStr for ProxyConfig {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self, Error> {
        ProxyConfig::parse(url)
    }
}

impl fmt::Display for ProxyConfig {
    /// The URL without the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Socks5h => "socks5h",
        };
        write!(f, "{scheme}://{}", authority(&self.host, self.port))
    }
}

/// What a proxy answered instead of opening the tunnel. Carried inside
/// [`Error::Io`]: `error.get_ref()` downcasts to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The HTTP proxy answered `CONNECT` with a non-2xx status (407: it
    /// wants credentials, or refused the ones sent).
    #[error("the proxy answered CONNECT {target} with HTTP {status}{}", with_body(.body))]
    HttpRefused {
        /// `host:port` asked for.
        target: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body (at most 4 KiB).
        body: String,
    },
    /// The SOCKS5 proxy answered the connect request with an error reply.
    #[error("the SOCKS5 proxy could not connect to {target}: {} (reply {code})", socks_reply(*.code))]
    SocksRefused {
        /// `host:port` asked for.
        target: String,
        /// The reply code (RFC 1928 section 6).
        code: u8,
    },
    /// The SOCKS5 proxy accepts none of the authentication methods offered.
    #[error("the SOCKS5 proxy accepts none of the offered authentication methods ({offered})")]
    SocksNoAcceptableAuth {
        /// What was offered, for the message.
        offered: &'static str,
    },
    /// The SOCKS5 proxy refused the username and password.
    #[error("the SOCKS5 proxy refused the username and password")]
    SocksAuthFailed,
    /// The proxy's answer is not what its protocol says.
    #[error("the proxy broke its protocol: {0}")]
    Malformed(String),
}

impl ProxyError {
    /// The `io::ErrorKind` it travels under: `ConnectionRefused` when the
    /// proxy could not reach the server, `PermissionDenied` for
    /// authentication, `InvalidData` for a broken answer.
    fn kind(&self) -> io::ErrorKind {
        match self {
            ProxyError::HttpRefused { status: 407, .. }
            | ProxyError::SocksNoAcceptableAuth { .. }
            | ProxyError::SocksAuthFailed => io::ErrorKind::PermissionDenied,
            ProxyError::SocksRefused { code: 3..=5, .. } => io::ErrorKind::ConnectionRefused,
            ProxyError::HttpRefused { .. } | ProxyError::SocksRefused { .. } => {
                io::ErrorKind::Other
            }
            ProxyError::Malformed(_) => io::ErrorKind::InvalidData,
        }
    }
}

impl From<ProxyError> for Error {
    fn from(e: ProxyError) -> Self {
        Error::Io(io::Error::new(e.kind(), e))
    }
}

fn with_body(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "not allowed by the proxy's rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

/// Connects to the proxy and asks it for a tunnel to `host:port`; returns
/// the TCP stream to the proxy, now carrying the tunnel.
pub(crate) async fn open_tunnel(
    proxy: &ProxyConfig,
    host: &str,
    port: u16,
    max_header_size: usize,
) -> Result<TcpStream, Error> {
    let mut tcp = crate::connect::open_tcp(&proxy.host, proxy.port).await?;
    match proxy.kind {
        ProxyKind::Http => {
            http_connect(&mut tcp, host, port, proxy.auth.as_ref(), max_header_size).await?
        }
        ProxyKind::Socks5 => {
            let target = match host.parse::<IpAddr>() {
                Ok(ip) => SocksTarget::Ip(ip),
                Err(_) => SocksTarget::Ip(resolve(host, port).await?),
            };
            socks5_connect(&mut tcp, &target, port, proxy.auth.as_ref()).await?
        }
        ProxyKind::Socks5h => {
            let target = match host.parse::<IpAddr>() {
                Ok(ip) => SocksTarget::Ip(ip),
                Err(_) => SocksTarget::Name(host),
            };
            socks5_connect(&mut tcp, &target, port, proxy.auth.as_ref()).await?
        }
    }
    Ok(tcp)
}

async fn resolve(host: &str, port: u16) -> Result<IpAddr, Error> {
    let dns = |source| Error::Dns {
        host: host.to_string(),
        source,
    };
    tokio::net::lookup_host((host, port))
        .await
        .map_err(dns)?
        .next()
        .map(|addr| addr.ip())
        .ok_or_else(|| dns(io::Error::new(io::ErrorKind::NotFound, "no addresses")))
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Sends `CONNECT host:port` and reads the answer. A 2xx opens the tunnel;
/// anything else is a [`ProxyError::HttpRefused`] with the start of the body.
pub(crate) async fn http_connect<S>(
    io: &mut S,
    host: &str,
    port: u16,
    auth: Option<&ProxyAuth>,
    max_header_size: usize,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = authority(host, port);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = auth {
        let credentials = STANDARD.encode(format!("{}:{}", auth.username, auth.password));
        request.push_str(&format!("Proxy-Authorization: Basic {credentials}\r\n"));
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;

    let mut buf = BytesMut::with_capacity(1024);
    let (status, content_length, head_len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response
            .parse(&buf)
            .map_err(|e| ProxyError::Malformed(format!("bad CONNECT response: {e}")))?;
        if let httparse::Status::Complete(len) = parsed {
            let status = response.code.unwrap_or(0);
            let content_length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                });
            break (status, content_length, len);
        }
        if buf.len() >= max_header_size {
            return Err(ProxyError::Malformed(format!(
                "the CONNECT response head is over {max_header_size} bytes"
            ))
            .into());
        }
        buf.reserve(1024.min(max_header_size - buf.len()));
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the proxy closed the connection before answering CONNECT",
            )
            .into());
        }
    };
    if (200..300).contains(&status) {
        // A WebSocket or TLS client speaks first: nothing can follow the
        // answer yet, and bytes that did would be lost with this buffer.
        if buf.len() > head_len {
            return Err(ProxyError::Malformed(
                "data after the CONNECT response, before the client spoke".into(),
            )
            .into());
        }
        return Ok(());
    }
    let body = read_body(io, buf.split_off(head_len), content_length).await;
    Err(ProxyError::HttpRefused {
        target,
        status,
        body,
    }
    .into())
}

/// Reads up to 4 KiB of a refusal's body (within 2 s), for the message.
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    mut buf: BytesMut,
    content_length: Option<usize>,
) -> String {
    const LIMIT: usize = 4096;
    let want = content_length.unwrap_or(LIMIT).min(LIMIT);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while buf.len() < want {
            buf.reserve(want - buf.len());
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    buf.truncate(want);
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

/// The address a SOCKS5 connect request names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SocksTarget<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

const SOCKS_VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xff;

/// The SOCKS5 exchange: method selection, username/password when the
/// proxy picks it, then CONNECT. Reads exactly the bytes of each reply, so
/// nothing of the tunnel is consumed.
pub(crate) async fn socks5_connect<S>(
    io: &mut S,
    target: &SocksTarget<'_>,
    port: u16,
    auth: Option<&ProxyAuth>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target_text = match target {
        SocksTarget::Ip(ip) => authority(&ip.to_string(), port),
        SocksTarget::Name(name) => authority(name, port),
    };
    let (greeting, offered): (&[u8], _) = match auth {
        Some(_) => (
            &[SOCKS_VERSION, 2, NO_AUTH, USER_PASS],
            "none, username/password",
        ),
        None => (&[SOCKS_VERSION, 1, NO_AUTH], "none"),
    };
    io.write_all(greeting).await?;
    io.flush().await?;
    let mut choice = [0u8; 2];
    io.read_exact(&mut choice).await?;
    if choice[0] != SOCKS_VERSION {
        return Err(ProxyError::Malformed(format!(
            "SOCKS version {} in the method reply (not a SOCKS5 proxy?)",
            choice[0]
        ))
        .into());
    }
    match (choice[1], auth) {
        (NO_AUTH, _) => {}
        (USER_PASS, Some(auth)) => socks5_authenticate(io, auth).await?,
        (NO_ACCEPTABLE, _) => return Err(ProxyError::SocksNoAcceptableAuth { offered }.into()),
        (other, _) => {
            return Err(ProxyError::Malformed(format!(
                "the SOCKS5 proxy chose method {other}, which was not offered"
            ))
            .into())
        }
    }

    let mut request = vec![SOCKS_VERSION, 1 /* CONNECT */, 0];
    match target {
        SocksTarget::Ip(IpAddr::V4(ip)) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        SocksTarget::Ip(IpAddr::V6(ip)) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
        SocksTarget::Name(name) => {
            let len = u8::try_from(name.len()).map_err(|_| Error::Url {
                url: (*name).to_string(),
                reason: "the host name is too long for SOCKS5 (255 bytes at most)",
            })?;
            request.push(3);
            request.push(len);
            request.extend_from_slice(name.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    io.write_all(&request).await?;
    io.flush().await?;

    let mut head = [0u8; 4];
    io.read_exact(&mut head).await?;
    if head[0] != SOCKS_VERSION {
        return Err(ProxyError::Malformed(format!(
            "SOCKS version {} in the connect reply",
            head[0]
        ))
        .into());
    }
    if head[1] != 0 {
        return Err(ProxyError::SocksRefused {
            target: target_text,
            code: head[1],
        }
        .into());
    }
    // The address the proxy bound: read it to leave the stream at the tunnel.
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            io.read_exact(&mut len).await?;
            usize::from(len[0]) + 2
        }
        other => {
            return Err(
                ProxyError::Malformed(format!("address type {other} in the connect reply")).into(),
            )
        }
    };
    let mut bound = [0u8; 255 + 2];
    io.read_exact(&mut bound[..rest]).await?;
    Ok(())
}

/// RFC 1929: version 1, then the username and password, each behind its length.
async fn socks5_authenticate<S>(io: &mut S, auth: &ProxyAuth) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let too_long = || Error::Url {
        url: auth.username.clone(),
        reason: "SOCKS5 usernames and passwords are 255 bytes at most",
    };
    let user = u8::try_from(auth.username.len()).map_err(|_| too_long())?;
    let pass = u8::try_from(auth.password.len()).map_err(|_| too_long())?;
    let mut request = Vec::with_capacity(3 + auth.username.len() + auth.password.len());
    request.push(1);
    request.push(user);
    request.extend_from_slice(auth.username.as_bytes());
    request.push(pass);
    request.extend_from_slice(auth.password.as_bytes());
    io.write_all(&request).await?;
    io.flush().await?;
    let mut reply = [0u8; 2];
    io.read_exact(&mut reply).await?;
    if reply[1] != 0 {
        return Err(ProxyError::SocksAuthFailed.into());
    }
    Ok(())
}

/// Decodes `%XX` escapes; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy_error(e: &Error) -> &ProxyError {
        match e {
            Error::Io(io) => io.get_ref().unwrap().downcast_ref::<ProxyError>().unwrap(),
            other => panic!("not a proxy error: {other:?}"),
        }
    }

    #[test]
    fn parses_proxy_urls() {
        let p = ProxyConfig::parse("http://proxy.example:3128").unwrap();
        assert_eq!(p, ProxyConfig::new(ProxyKind::Http, "proxy.example", 3128));
        let p = ProxyConfig::parse("socks5://127.0.0.1").unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::Socks5, 1080));
        let p = ProxyConfig::parse("socks5h://[::1]:9050/").unwrap();
        assert_eq!(
            (p.kind, p.host.as_str(), p.port),
            (ProxyKind::Socks5h, "::1", 9050)
        );
        let p = ProxyConfig::parse("http://al%40ice:p%3Ass@h:1").unwrap();
        let auth = p.auth.unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("al@ice", "p:ss")
        );
        for bad in [
            "proxy:3128",
            "ftp://h:1",
            "https://h:1",
            "http://h:1/path",
            "http://%zz@h",
        ] {
            assert!(
                matches!(ProxyConfig::parse(bad), Err(Error::Url { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            ProxyConfig::parse("socks5://u:p@[::1]:9")
                .unwrap()
                .to_string(),
            "socks5://[::1]:9"
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let p = ProxyConfig::new(ProxyKind::Http, "h", 1).auth("user", "secret");
        assert!(!format!("{p:?}").contains("secret"));
    }

    #[tokio::test]
    async fn http_connect_sends_credentials_and_accepts_200() {
        let (mut client, mut proxy) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let mut buf = vec![0u8; 1024];
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n\r\n") {
                let n = proxy.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            proxy
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let auth = ProxyAuth {
            username: "u".into(),
            password: "p".into(),
        };
        http_connect(&mut client, "::1", 443, Some(&auth), 16384)
            .await
            .unwrap();
        let request = server.await.unwrap();
        assert!(
            request.starts_with("CONNECT [::1]:443 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn http_connect_refusal_carries_status_and_body() {
        let (mut client, mut proxy) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = proxy.read(&mut buf).await;
            proxy
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 9\r\n\r\nwho are u")
                .await
                .unwrap();
        });
        let err = http_connect(&mut client, "h", 80, None, 16384)
            .await
            .unwrap_err();
        match proxy_error(&err) {
            ProxyError::HttpRefused {
                status,
                body,
                target,
            } => {
                assert_eq!(
                    (*status, body.as_str(), target.as_str()),
                    (407, "who are u", "h:80")
                );
            }
            other => panic!("{other:?}"),
        }
        let Error::Io(io) = &err else { unreachable!() };
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
    }

    /// A scripted SOCKS5 proxy: checks each request and answers.
    async fn socks_peer(mut io: tokio::io::DuplexStream, with_auth: bool, reply: u8) -> Vec<u8> {
        let mut greeting = vec![0u8; if with_auth { 4 } else { 3 }];
        io.read_exact(&mut greeting).await.unwrap();
        if with_auth {
            assert_eq!(greeting, [5, 2, 0, 2]);
            io.write_all(&[5, 2]).await.unwrap();
            let mut auth = [0u8; 1 + 1 + 4 + 1 + 2];
            io.read_exact(&mut auth).await.unwrap();
            assert_eq!(&auth, b"\x01\x04user\x02pw");
            io.write_all(&[1, 0]).await.unwrap();
        } else {
            assert_eq!(greeting, [5, 1, 0]);
            io.write_all(&[5, 0]).await.unwrap();
        }
        let mut head = vec![0u8; 4];
        io.read_exact(&mut head).await.unwrap();
        let addr_len = match head[3] {
            1 => 4,
            4 => 16,
            _ => {
                let mut len = [0u8; 1];
                io.read_exact(&mut len).await.unwrap();
                head.push(len[0]);
                usize::from(len[0])
            }
        };
        let mut rest = vec![0u8; addr_len + 2];
        io.read_exact(&mut rest).await.unwrap();
        io.write_all(&[5, reply, 0, 1, 127, 0, 0, 1, 0x1f, 0x90])
            .await
            .unwrap();
        io.write_all(b"tunnel").await.unwrap();
        let mut request = head;
        request.extend_from_slice(&rest);
        request
    }

    #[tokio::test]
    async fn socks5_sends_the_name_and_leaves_the_tunnel_unread() {
        let (mut client, proxy) = tokio::io::duplex(4096);
        let peer = tokio::spawn(socks_peer(proxy, true, 0));
        let auth = ProxyAuth {
            username: "user".into(),
            password: "pw".into(),
        };
        socks5_connect(
            &mut client,
            &SocksTarget::Name("example.test"),
            8080,
            Some(&auth),
        )
        .await
        .unwrap();
        let request = peer.await.unwrap();
        assert_eq!(&request[..5], &[5, 1, 0, 3, 12]);
        assert_eq!(&request[5..17], b"example.test");
        assert_eq!(&request[17..], &8080u16.to_be_bytes());
        let mut rest = [0u8; 6];
        client.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"tunnel");
    }

    #[tokio::test]
    async fn socks5_refusal_is_connection_refused() {
        let (mut client, proxy) = tokio::io::duplex(4096);
        tokio::spawn(socks_peer(proxy, false, 5));
        let target = SocksTarget::Ip("127.0.0.1".parse().unwrap());
        let err = socks5_connect(&mut client, &target, 9, None)
            .await
            .unwrap_err();
        assert!(matches!(
            proxy_error(&err),
            ProxyError::SocksRefused { code: 5, .. }
        ));
        let Error::Io(io) = &err else { unreachable!() };
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        assert!(err.to_string().contains("connection refused"), "{err}");
    }
}
