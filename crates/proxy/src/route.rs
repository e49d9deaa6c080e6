//! Where a request goes: backends, routes by longest path prefix, and the
//! allow-list of the client-chosen-backend mode.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::Error;

/// A backend: `ws://` or `wss://` (`http://` and `https://` mean the same),
/// a host, a port and an optional path that replaces the route's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    secure: bool,
    host: String,
    port: u16,
    /// "" when the URL has no path (or just "/"): the request's own path is kept.
    path: String,
    query: Option<String>,
}

impl Backend {
    /// Whether the backend speaks TLS (`wss://`, `https://`).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The host, without brackets around an IPv6 address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (the scheme's default when the URL has none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, for messages and `Host` (IPv6 in brackets; the port
    /// left out when it is the scheme's default).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn default_port(&self) -> u16 {
        if self.secure {
            443
        } else {
            80
        }
    }

    /// The request target at the backend for a request to `path?query`
    /// matched by a route of `prefix`: without a backend path the request's
    /// path is kept whole; with one, the backend path replaces the prefix
    /// (`/chat=ws://a/ws` sends `/chat/room` to `/ws/room`). Queries of both
    /// are kept, the backend's first.
    pub(crate) fn target(&self, prefix: &str, path: &str, query: Option<&str>) -> String {
        let mut target = if self.path.is_empty() {
            path.to_owned()
        } else {
            let rest = path.get(prefix.trim_end_matches('/').len()..).unwrap_or("");
            let mut joined = self.path.clone();
            if joined.ends_with('/') && rest.starts_with('/') {
                joined.pop();
            }
            joined.push_str(rest);
            joined
        };
        if target.is_empty() {
            target.push('/');
        }
        let queries: Vec<&str> = [self.query.as_deref(), query]
            .into_iter()
            .flatten()
            .filter(|q| !q.is_empty())
            .collect();
        if !queries.is_empty() {
            target.push('?');
            target.push_str(&queries.join("&"));
        }
        target
    }

    /// The backend's own path and query (the request target in the
    /// client-chosen mode, where the URL names the endpoint exactly).
    pub(crate) fn own_target(&self) -> String {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        match &self.query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        }
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self, Error> {
        let bad = |reason| Error::BackendUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let secure = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("ws" | "http") => false,
            Some("wss" | "https") => true,
            Some(_) => return Err(bad("the scheme must be ws://, wss://, http:// or https://")),
            None => return Err(bad("missing ws:// or wss://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not allowed in a backend URL"));
        }
        let host = uri.host().ok_or_else(|| bad("missing host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let path = match uri.path() {
            "/" => String::new(),
            p => p.to_owned(),
        };
        Ok(Backend {
            secure,
            host: host.to_ascii_lowercase(),
            port,
            path,
            query: uri.query().map(str::to_owned),
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "wss" } else { "ws" };
        write!(f, "{scheme}://{}{}", self.authority(), self.own_target())
    }
}

/// A path prefix and the backend that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Starts with `/`; `/chat` matches `/chat`, `/chat/x`, not `/chatty`.
    pub prefix: String,
    /// Where its requests go.
    pub backend: Backend,
}

impl Route {
    /// A route; fails when `prefix` does not start with `/`.
    pub fn new(prefix: &str, backend: Backend) -> Result<Route, Error> {
        if !prefix.starts_with('/') {
            return Err(Error::Route {
                route: format!("{prefix}={backend}"),
                reason: "the prefix must start with /",
            });
        }
        Ok(Route {
            prefix: prefix.to_owned(),
            backend,
        })
    }

    fn matches(&self, path: &str) -> bool {
        let prefix = self.prefix.trim_end_matches('/');
        match path.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
            None => false,
        }
    }
}

impl FromStr for Route {
    type Err = Error;

    /// `/prefix=URL`, as `--route` takes it.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason| Error::Route {
            route: s.to_owned(),
            reason,
        };
        let (prefix, url) = s
            .split_once('=')
            .ok_or_else(|| bad("expected /prefix=URL"))?;
        if !prefix.starts_with('/') {
            return Err(bad("the prefix must start with /"));
        }
        Route::new(prefix, url.parse()?)
    }
}

/// The route for `path`: the longest matching prefix.
pub(crate) fn longest_match<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    routes
        .iter()
        .filter(|r| r.matches(path))
        .max_by_key(|r| r.prefix.trim_end_matches('/').len())
}

/// An entry of the allow-list of client-chosen backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedBackend {
    /// This URL exactly (scheme, host, port, path and query).
    Url(Backend),
    /// Any URL on this host and port, with either scheme.
    HostPort {
        /// The host (lowercase, no brackets).
        host: String,
        /// The port.
        port: u16,
    },
}

impl AllowedBackend {
    pub(crate) fn allows(&self, backend: &Backend) -> bool {
        match self {
            AllowedBackend::Url(url) => url == backend,
            AllowedBackend::HostPort { host, port } => {
                *host == backend.host && *port == backend.port
            }
        }
    }

    /// Whether the entry names an IP address itself: then that address is
    /// allowed even when loopback or private (the operator said so).
    pub(crate) fn names_address(&self) -> bool {
        let host = match self {
            AllowedBackend::Url(url) => &url.host,
            AllowedBackend::HostPort { host, .. } => host,
        };
        host.parse::<IpAddr>().is_ok()
    }
}

impl FromStr for AllowedBackend {
    type Err = Error;

    /// A URL (`ws://chat.example.com/socket`) or `host:port`.
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.contains("://") {
            return Ok(AllowedBackend::Url(s.parse()?));
        }
        let bad = |reason| Error::AllowEntry {
            entry: s.to_owned(),
            reason,
        };
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected a URL or host:port"))?;
        let port = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(AllowedBackend::HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Whether `ip` is an address a client must not reach through the proxy
/// unless the operator named it: loopback, private, link-local, shared
/// (CGNAT), unspecified, multicast, documentation, benchmarking, reserved.
pub(crate) fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking (RFC 2544)
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local (fc00::/7)
        || (first & 0xffc0) == 0xfe80 // link-local (fe80::/10)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || ip.to_ipv4().is_some_and(|v4| ip.segments()[..6] == [0; 6] && is_internal_v4(v4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(url: &str) -> Backend {
        url.parse().unwrap()
    }

    #[test]
    fn backend_urls() {
        let b = backend("ws://127.0.0.1:9000");
        assert_eq!(
            (b.host(), b.port(), b.is_secure()),
            ("127.0.0.1", 9000, false)
        );
        assert_eq!(b.to_string(), "ws://127.0.0.1:9000/");
        let b = backend("wss://Example.COM/socket?x=1");
        assert_eq!(
            (b.host(), b.port(), b.is_secure()),
            ("example.com", 443, true)
        );
        assert_eq!(b.authority(), "example.com");
        assert_eq!(b.to_string(), "wss://example.com/socket?x=1");
        assert_eq!(backend("http://[::1]:8080").authority(), "[::1]:8080");
        for bad in ["ftp://a", "127.0.0.1:9000", "ws://", "ws://user@host/"] {
            assert!(bad.parse::<Backend>().is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_keep_or_replace_the_prefix() {
        let keep = backend("ws://a:1");
        assert_eq!(
            keep.target("/chat", "/chat/room", Some("u=1")),
            "/chat/room?u=1"
        );
        let replace = backend("ws://a:1/ws");
        assert_eq!(replace.target("/chat", "/chat/room", None), "/ws/room");
        assert_eq!(replace.target("/chat", "/chat", None), "/ws");
        assert_eq!(replace.target("/chat/", "/chat/x", None), "/ws/x");
        let slash = backend("ws://a:1/ws/?k=v");
        assert_eq!(
            slash.target("/chat", "/chat/room", Some("u=1")),
            "/ws/room?k=v&u=1"
        );
        assert_eq!(backend("ws://a:1").target("/", "/", None), "/");
    }

    #[test]
    fn longest_prefix_wins() {
        let routes: Vec<Route> = ["/=ws://d:1", "/chat=ws://a:1", "/chat/admin=ws://b:2"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let host = |path| longest_match(&routes, path).map(|r| r.backend.host().to_owned());
        assert_eq!(host("/chat").as_deref(), Some("a"));
        assert_eq!(host("/chat/x").as_deref(), Some("a"));
        assert_eq!(host("/chat/admin/y").as_deref(), Some("b"));
        assert_eq!(host("/chatty").as_deref(), Some("d"));
        assert_eq!(host("/").as_deref(), Some("d"));
        let only_chat = &routes[1..];
        assert!(longest_match(only_chat, "/feed").is_none());
        assert!("chat=ws://a:1".parse::<Route>().is_err());
        assert!("/chat".parse::<Route>().is_err());
    }

    #[test]
    fn allow_list_entries() {
        let exact: AllowedBackend = "ws://chat.example.com/socket".parse().unwrap();
        assert!(exact.allows(&backend("ws://chat.example.com/socket")));
        assert!(!exact.allows(&backend("ws://chat.example.com/other")));
        assert!(!exact.allows(&backend("wss://chat.example.com/socket")));
        assert!(!exact.names_address());
        let host_port: AllowedBackend = "127.0.0.1:9000".parse().unwrap();
        assert!(host_port.allows(&backend("ws://127.0.0.1:9000/anything")));
        assert!(!host_port.allows(&backend("ws://127.0.0.1:9001/")));
        assert!(host_port.names_address());
        assert!("no-port".parse::<AllowedBackend>().is_err());
    }

    #[test]
    fn internal_addresses() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }
}
