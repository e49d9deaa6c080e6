//! `sockeye connect` flags as typed ([`ConnectArgs`]), and the checked,
//! resolved settings they become ([`Settings`]).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use sockeye::{Config, DeflateConfig, ProxyConfig};

use super::exit::{Exit, Failure};

const ABOUT: &str = "Connect to a WebSocket server: interactive, piped, or one-shot (-x)";

const LONG_ABOUT: &str = "\
Connect to a WebSocket server.

Interactive when stdin and stdout are terminals: a prompt with line editing
and history; received messages are printed above it marked '<', sent ones
stay on screen marked '>'. Commands: /ping [data], /close [code [reason]],
/binary <hex or @file>, /help, /quit; start a line with // to send one that
begins with /.

Pipe mode otherwise: each line of stdin is sent as a text message (the whole
of stdin as one binary message with --binary), and each received message is
written to stdout, one per line (binary as hex, or raw with --binary). When
stdin ends, a close (1000) is sent and the close handshake awaited.

  echo hi | sockeye connect ws://127.0.0.1:3000/echo
  sockeye connect ws://127.0.0.1:3000/echo > log
  sockeye connect -x '{\"type\":\"ping\"}' --wait 1 --json wss://example.test/ws";

/// The exit-code table, shown by `sockeye connect --help` (also in docs/CLI.md).
const EXIT_CODES: &str = "\
Exit codes:
  0  ok: stdin ended, /quit, -x finished, or the server closed with 1000
  1  other error (handshake timeout, protocol error, I/O error)
  2  bad usage or URL
  3  DNS: the host name did not resolve
  4  refused: nothing listens there, or it is unreachable (also through a proxy)
  5  TLS failure (the reason is printed)
  6  handshake refused: not 101 (status and body printed), or the proxy refused
  7  closed by the peer with a code other than 1000 (code and reason printed)";

/// `sockeye connect URL`: flags as typed.
#[derive(Debug, clap::Args)]
#[command(about = ABOUT, long_about = LONG_ABOUT, after_long_help = EXIT_CODES)]
pub(crate) struct ConnectArgs {
    /// The server: ws://host[:port]/path or wss://… (user:pass@ in it is sent as --auth).
    #[arg(value_name = "URL")]
    url: String,
    /// Add a request header, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Offer a subprotocol (repeatable, in order of preference).
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Send this Origin header.
    #[arg(long, value_name = "ORIGIN")]
    origin: Option<String>,
    /// HTTP Basic authentication.
    #[arg(long, value_name = "USER:PASS")]
    auth: Option<String>,
    /// Send a ping this often (seconds; 500ms, 30s and 2m also work).
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    ping_interval: Option<Duration>,
    /// Reconnect (with backoff) when the connection drops, resending nothing.
    #[arg(long)]
    reconnect: bool,
    /// DANGEROUS: accept any TLS certificate (self-signed, expired, another name).
    #[arg(short = 'k', long, conflicts_with = "ca")]
    insecure: bool,
    /// Also trust the PEM certificate(s) in FILE for wss:// (a private CA, a test server).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Go through a proxy: http://[user:pass@]host:port (CONNECT), socks5:// or socks5h://.
    #[arg(long, value_name = "URL", value_parser = parse_proxy)]
    proxy: Option<ProxyConfig>,
    /// Offer permessage-deflate compression.
    #[arg(long)]
    compress: bool,
    /// Pretty-print received messages that are JSON.
    #[arg(long)]
    json: bool,
    /// Print the server's handshake response (status and headers) to stderr.
    #[arg(long)]
    show_headers: bool,
    /// Send MSG (repeatable), print replies for --wait seconds, close, exit.
    #[arg(short = 'x', long = "execute", value_name = "MSG")]
    execute: Vec<String>,
    /// With -x: how long to print replies before closing.
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration, default_value = "2", requires = "execute")]
    wait: Duration,
    /// Largest message (and frame) accepted, in bytes (64K and 16M also work).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    max_size: Option<usize>,
    /// Binary messages: stdin whole as one message, received ones written raw; -x and typed lines sent as binary.
    #[arg(long)]
    binary: bool,
    /// No colours (NO_COLOR in the environment does the same).
    #[arg(long)]
    no_color: bool,
}

/// How the session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A prompt on a terminal.
    Interactive,
    /// stdin lines in, messages out.
    Pipe,
    /// Send these, print replies for a while, close.
    Execute {
        messages: Vec<String>,
        wait: Duration,
    },
}

/// Checked and resolved settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The URL to connect to, without credentials.
    pub(crate) url: String,
    /// `host:port` of the server, for messages.
    pub(crate) target: String,
    pub(crate) config: Config,
    pub(crate) mode: Mode,
    pub(crate) binary: bool,
    pub(crate) json: bool,
    pub(crate) show_headers: bool,
    /// Colours on stdout (interactive) and on stderr's "error:".
    pub(crate) color: bool,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) reconnect: bool,
}

impl ConnectArgs {
    /// Checks what clap could not (the URL, the CA file, `--auth`) and
    /// builds the connection [`Config`].
    pub(crate) fn resolve(self) -> Result<Settings, Failure> {
        let usage = |message: String| Failure::new(Exit::Usage, message);
        if !self.url.contains("://") {
            return Err(usage(format!(
                "invalid URL {:?}: missing ws:// or wss://",
                self.url
            )));
        }
        let (url, url_auth) = strip_credentials(&self.url);
        let uri: http::Uri = url
            .parse()
            .map_err(|_| usage(format!("invalid URL {:?}: not a URL", self.url)))?;
        let (secure, default_port) = match uri.scheme_str() {
            Some("ws") => (false, 80),
            Some("wss") => (true, 443),
            Some(other) => {
                return Err(usage(format!(
                    "invalid URL {:?}: the scheme is {other:?}; use ws:// or wss://",
                    self.url
                )))
            }
            None => {
                return Err(usage(format!(
                    "invalid URL {:?}: missing ws:// or wss://",
                    self.url
                )))
            }
        };
        let host = match uri.host() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(usage(format!("invalid URL {:?}: missing host", self.url))),
        };
        let target = format!("{host}:{}", uri.port_u16().unwrap_or(default_port));

        let mut config = Config::default();
        for (name, value) in self.headers {
            config.headers.append(name, value);
        }
        if let Some(origin) = &self.origin {
            let value = HeaderValue::from_str(origin)
                .map_err(|_| usage(format!("--origin {origin:?} is not a valid header value")))?;
            config.headers.insert(http::header::ORIGIN, value);
        }
        if let Some(auth) = self.auth.or(url_auth) {
            if !auth.contains(':') {
                return Err(usage("--auth wants USER:PASS".into()));
            }
            let value = format!("Basic {}", STANDARD.encode(auth));
            let value = HeaderValue::from_str(&value).expect("base64 is a valid header value");
            config.headers.insert(http::header::AUTHORIZATION, value);
        }
        config.protocols = self
            .subprotocols
            .iter()
            .flat_map(|p| p.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if self.compress {
            config.deflate = Some(DeflateConfig::default());
        }
        if let Some(max) = self.max_size {
            config = config.max_message_size(max);
        }
        if self.insecure {
            config.tls = Some(sockeye::tls::insecure_client_config());
        } else if let Some(ca) = &self.ca {
            let tls = sockeye::tls::client_config_with_ca(ca).map_err(|e| match e {
                sockeye::Error::Tls(reason) => usage(format!("--ca: {reason}")),
                other => usage(format!("--ca: {other}")),
            })?;
            config.tls = Some(Arc::clone(&tls));
        }
        if (self.insecure || self.ca.is_some()) && !secure {
            // Harmless, but likely a mistake worth a word.
            eprintln!("warning: --insecure and --ca only matter for wss:// URLs");
        }
        config.proxy = self.proxy;

        let mode = if !self.execute.is_empty() {
            Mode::Execute {
                messages: self.execute,
                wait: self.wait,
            }
        } else if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            Mode::Interactive
        } else {
            Mode::Pipe
        };
        let color = !self.no_color
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        Ok(Settings {
            url,
            target,
            config,
            mode,
            binary: self.binary,
            json: self.json,
            show_headers: self.show_headers,
            color,
            ping_interval: self.ping_interval,
            reconnect: self.reconnect,
        })
    }
}

/// Takes `user:pass@` out of a URL's authority: it goes in the
/// Authorization header, not the Host header.
fn strip_credentials(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => (
            format!("{}{host}{}", &url[..scheme_end + 3], &rest[authority_end..]),
            Some(userinfo.to_string()),
        ),
        None => (url.to_string(), None),
    }
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a valid header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("{:?} is not a valid header value", value.trim()))?;
    Ok((name, value))
}

fn parse_proxy(s: &str) -> Result<ProxyConfig, String> {
    ProxyConfig::parse(s).map_err(|e| match e {
        sockeye::Error::Url { reason, .. } => reason.to_string(),
        other => other.to_string(),
    })
}

/// Seconds (`1.5`), or a number with `ms`, `s` or `m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 2, 0.5, 500ms or 1m)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{s:?} is out of range"))
}

/// Bytes, with an optional K, M or G (powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (number, shift) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 10),
        Some((i, 'm' | 'M')) => (&s[..i], 20),
        Some((i, 'g' | 'G')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let value: usize = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 65536, 64K or 16M)"))?;
    value
        .checked_mul(1 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConnectArgs,
    }

    fn resolve(argv: &[&str]) -> Result<Settings, Failure> {
        let cli = Cli::try_parse_from(std::iter::once("connect").chain(argv.iter().copied()))
            .map_err(|e| Failure::new(Exit::Usage, e.to_string()))?;
        cli.args.resolve()
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("16m").unwrap(), 16 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn headers_auth_origin_and_protocols_reach_the_config() {
        let s = resolve(&[
            "ws://u:p@example.test:8080/chat?x=1",
            "-H",
            "X-Trace:  abc ",
            "--origin",
            "https://app.test",
            "--subprotocol",
            "v2.chat,v1.chat",
            "--subprotocol",
            "json",
            "--compress",
            "--max-size",
            "1K",
        ])
        .unwrap();
        assert_eq!(s.url, "ws://example.test:8080/chat?x=1");
        assert_eq!(s.target, "example.test:8080");
        let h = &s.config.headers;
        assert_eq!(h["x-trace"], "abc");
        assert_eq!(h["origin"], "https://app.test");
        assert_eq!(h["authorization"], "Basic dTpw");
        assert_eq!(s.config.protocols, ["v2.chat", "v1.chat", "json"]);
        assert!(s.config.deflate.is_some());
        assert_eq!(s.config.protocol.max_message_size, 1024);
    }

    #[test]
    fn auth_flag_wins_over_url_credentials() {
        let s = resolve(&["wss://a:b@h/", "--auth", "alice:secret"]).unwrap();
        assert_eq!(s.url, "wss://h/");
        assert_eq!(s.target, "h:443");
        assert_eq!(s.config.headers["authorization"], "Basic YWxpY2U6c2VjcmV0");
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for argv in [
            &["localhost:3000"][..],
            &["http://localhost/"],
            &["ws://"],
            &["ws://h/", "--auth", "nopassword"],
            &["ws://h/", "-H", "no colon"],
            &["ws://h/", "--proxy", "ftp://p:1"],
            &["ws://h/", "--wait", "3"],
            &["wss://h/", "--ca", "/nonexistent/ca.pem"],
            &["wss://h/", "--ca", "x", "--insecure"],
        ] {
            let err = resolve(argv).unwrap_err();
            assert_eq!(err.exit, Exit::Usage, "{argv:?}: {}", err.message);
        }
    }

    #[test]
    fn execute_mode_keeps_messages_in_order() {
        let s = resolve(&["ws://h/", "-x", "one", "-x", "two", "--wait", "0.5"]).unwrap();
        assert_eq!(
            s.mode,
            Mode::Execute {
                messages: vec!["one".into(), "two".into()],
                wait: Duration::from_millis(500)
            }
        );
    }
}
