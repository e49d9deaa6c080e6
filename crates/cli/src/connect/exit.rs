//! Exit codes, and the one place that maps what went wrong to a code and a
//! message for a person.

use std::io::ErrorKind;

use sockeye::{CloseCode, CloseFrame, ProxyError};

/// `sockeye connect` exit codes; the table is in `--help` and docs/CLI.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Ok = 0,
    Other = 1,
    Usage = 2,
    Dns = 3,
    Refused = 4,
    Tls = 5,
    HandshakeRefused = 6,
    ClosedByPeer = 7,
}

impl Exit {
    pub(crate) fn code(self) -> i32 {
        self as i32
    }
}

/// Why the command stops: a code, a one-line message, and maybe more text
/// (a refusal's body) printed under it.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: Exit,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
}

impl Failure {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            detail: None,
        }
    }

    fn with_detail(mut self, detail: String) -> Self {
        if !detail.is_empty() {
            self.detail = Some(detail);
        }
        self
    }
}

/// What a failed `connect_with` means. `target` is the server's
/// `host:port`; `proxy` the proxy's URL (no credentials), when one is used.
pub(crate) fn connect_failure(
    error: &sockeye::Error,
    target: &str,
    proxy: Option<&str>,
) -> Failure {
    use sockeye::Error as E;
    match error {
        E::Url { .. } => Failure::new(Exit::Usage, error.to_string()),
        E::Dns { .. } => Failure::new(Exit::Dns, error.to_string()),
        E::Tls(reason) => {
            let mut failure = Failure::new(
                Exit::Tls,
                format!("TLS handshake with {target} failed: {reason}"),
            );
            if reason.contains("certificate") {
                failure = failure.with_detail(
                    "(--ca FILE trusts a private CA or a self-signed certificate; \
                     --insecure skips the checks, dangerously)"
                        .into(),
                );
            }
            failure
        }
        E::Refused {
            status,
            body,
            response,
        } => {
            let reason = response
                .status()
                .canonical_reason()
                .map(|r| format!(" {r}"))
                .unwrap_or_default();
            Failure::new(
                Exit::HandshakeRefused,
                format!("the server refused the WebSocket upgrade: HTTP {status}{reason}"),
            )
            .with_detail(body.clone())
        }
        E::Handshake(e) => Failure::new(
            Exit::HandshakeRefused,
            format!("the opening handshake with {target} failed: {e}"),
        ),
        E::HandshakeTimeout(t) => Failure::new(
            Exit::Other,
            format!("no answer from {target}: the opening handshake did not finish within {t:?}"),
        ),
        E::Io(io) => {
            if let Some(proxy_error) = io.get_ref().and_then(|e| e.downcast_ref::<ProxyError>()) {
                return proxy_failure(proxy_error, proxy.unwrap_or("the proxy"));
            }
            let (exit, what) = match io.kind() {
                ErrorKind::ConnectionRefused => (Exit::Refused, "connection refused"),
                ErrorKind::HostUnreachable => (Exit::Refused, "host unreachable"),
                ErrorKind::NetworkUnreachable => (Exit::Refused, "network unreachable"),
                _ => (Exit::Other, ""),
            };
            let whom = match proxy {
                Some(proxy) => format!("the proxy {proxy}"),
                None => target.to_string(),
            };
            if exit == Exit::Other {
                Failure::new(exit, format!("cannot connect to {whom}: {io}"))
            } else {
                Failure::new(exit, format!("cannot connect to {whom}: {what}"))
            }
        }
        other => Failure::new(Exit::Other, format!("cannot connect to {target}: {other}")),
    }
}

fn proxy_failure(error: &ProxyError, proxy: &str) -> Failure {
    match error {
        ProxyError::HttpRefused {
            target,
            status,
            body,
            ..
        } => {
            let hint = if *status == 407 {
                " (proxy credentials go in the URL: http://user:pass@host:port)"
            } else {
                ""
            };
            Failure::new(
                Exit::HandshakeRefused,
                format!("the proxy {proxy} refused CONNECT {target}: HTTP {status}{hint}"),
            )
            .with_detail(body.clone())
        }
        ProxyError::SocksRefused { code: 3..=5, .. } => {
            Failure::new(Exit::Refused, format!("{proxy}: {error}"))
        }
        ProxyError::Malformed(_) => Failure::new(Exit::Other, format!("{proxy}: {error}")),
        _ => Failure::new(Exit::HandshakeRefused, format!("{proxy}: {error}")),
    }
}

/// What an error after the handshake means.
pub(crate) fn session_failure(error: &sockeye::Error) -> Failure {
    match error {
        sockeye::Error::AbnormalClosure => Failure::new(
            Exit::ClosedByPeer,
            "connection closed by the peer without a close frame (1006)",
        ),
        sockeye::Error::Protocol(e @ sockeye::proto::Error::TooBig { .. }) => Failure::new(
            Exit::Other,
            format!("received a message over the limit (--max-size): {e}; closed with 1009"),
        ),
        sockeye::Error::Protocol(e) => Failure::new(
            Exit::Other,
            format!("the server broke the WebSocket protocol: {e}"),
        ),
        other => Failure::new(Exit::Other, format!("connection failed: {other}")),
    }
}

/// The peer's close: fine when it is 1000, no status, or the echo of the
/// code we closed with; otherwise exit 7 with the code and reason.
pub(crate) fn peer_close(frame: Option<&CloseFrame>, sent: Option<CloseCode>) -> Option<Failure> {
    let frame = frame?;
    if frame.code == CloseCode::NORMAL || Some(frame.code) == sent {
        return None;
    }
    Some(Failure::new(
        Exit::ClosedByPeer,
        format!("connection closed by the peer: {}", describe_close(frame)),
    ))
}

/// `1008 (policy violation): reason`.
pub(crate) fn describe_close(frame: &CloseFrame) -> String {
    let name = close_code_name(frame.code);
    let mut text = match name {
        Some(name) => format!("{} ({name})", frame.code),
        None => frame.code.to_string(),
    };
    if !frame.reason.is_empty() {
        text.push_str(": ");
        text.push_str(frame.reason.as_str());
    }
    text
}

fn close_code_name(code: CloseCode) -> Option<&'static str> {
    Some(match code.0 {
        1000 => "normal closure",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1007 => "invalid payload",
        1008 => "policy violation",
        1009 => "message too big",
        1010 => "mandatory extension",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later",
        1014 => "bad gateway",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_map_to_their_codes() {
        let io = |kind| sockeye::Error::Io(std::io::Error::from(kind));
        let cases = [
            (io(ErrorKind::ConnectionRefused), Exit::Refused),
            (io(ErrorKind::TimedOut), Exit::Other),
            (
                sockeye::Error::Tls("invalid peer certificate: UnknownIssuer".into()),
                Exit::Tls,
            ),
            (
                sockeye::Error::Dns {
                    host: "x.invalid".into(),
                    source: std::io::Error::from(ErrorKind::NotFound),
                },
                Exit::Dns,
            ),
            (
                sockeye::Error::Url {
                    url: "x".into(),
                    reason: "missing host",
                },
                Exit::Usage,
            ),
        ];
        for (error, exit) in cases {
            assert_eq!(connect_failure(&error, "h:1", None).exit, exit, "{error}");
        }
        let refused = connect_failure(&io(ErrorKind::ConnectionRefused), "127.0.0.1:9", None);
        assert_eq!(
            refused.message,
            "cannot connect to 127.0.0.1:9: connection refused"
        );
    }

    #[test]
    fn proxy_refusals_are_handshake_refusals_with_their_body() {
        let error = sockeye::Error::Io(std::io::Error::other(ProxyError::HttpRefused {
            target: "h:80".into(),
            status: 407,
            body: "login first".into(),
        }));
        let failure = connect_failure(&error, "h:80", Some("http://p:3128"));
        assert_eq!(failure.exit, Exit::HandshakeRefused);
        assert!(failure.message.contains("HTTP 407"), "{}", failure.message);
        assert_eq!(failure.detail.as_deref(), Some("login first"));
    }

    #[test]
    fn closes_other_than_1000_are_exit_7_unless_they_echo_ours() {
        let policy = CloseFrame::new(CloseCode::POLICY, "no bots");
        let failure = peer_close(Some(&policy), None).unwrap();
        assert_eq!(failure.exit, Exit::ClosedByPeer);
        assert_eq!(
            failure.message,
            "connection closed by the peer: 1008 (policy violation): no bots"
        );
        assert!(peer_close(Some(&policy), Some(CloseCode::POLICY)).is_none());
        assert!(peer_close(Some(&CloseFrame::new(CloseCode::NORMAL, "")), None).is_none());
        assert!(peer_close(None, None).is_none());
        assert_eq!(
            describe_close(&CloseFrame::new(CloseCode(4001), "")),
            "4001"
        );
    }
}
