//! The headers that go upstream and back: hop-by-hop ones removed,
//! `X-Forwarded-*` and `Forwarded` added, everything else untouched.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::route::Backend;

/// Headers that describe one hop, never the message (RFC 9110 section 7.6.1),
/// plus `Proxy-Authorization`, which is meant for the proxy itself.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Whether `headers` ask for a WebSocket upgrade (`Upgrade` lists
/// `websocket`); the request itself is checked by the proto validators.
pub(crate) fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
}

/// `headers` without the hop-by-hop ones and those the `Connection` header
/// names.
pub(crate) fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len() + 4);
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || named.iter().any(|t| t == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// What the backend receives: the client's end-to-end headers, `Host`, and
/// the forwarding headers (appended to what earlier proxies put there).
/// For an upgrade, `Upgrade` and `Connection: Upgrade` are kept so that the
/// handshake (`Sec-WebSocket-*`, subprotocols, extensions) is negotiated end
/// to end.
pub(crate) fn upstream(
    client: &HeaderMap,
    remote: SocketAddr,
    backend: &Backend,
    preserve_host: bool,
    upgrade: bool,
) -> HeaderMap {
    let mut out = end_to_end(client);
    let client_host = client.get(header::HOST).cloned();
    if !preserve_host || client_host.is_none() {
        if let Ok(host) = HeaderValue::from_str(&backend.authority()) {
            out.insert(header::HOST, host);
        }
    }
    if upgrade {
        for value in client.get_all(header::UPGRADE) {
            out.append(header::UPGRADE, value.clone());
        }
        out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    }

    let ip = remote.ip();
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    append_list(&mut out, X_FORWARDED_FOR, &ip.to_string());
    let xfh = HeaderName::from_static(X_FORWARDED_HOST);
    if let (false, Some(host)) = (out.contains_key(&xfh), &client_host) {
        out.insert(xfh, host.clone());
    }
    let xfp = HeaderName::from_static(X_FORWARDED_PROTO);
    if !out.contains_key(&xfp) {
        out.insert(xfp, HeaderValue::from_static("http"));
    }
    // RFC 7239: IPv6 in brackets and quotes; the host always quoted, since
    // it may hold a colon.
    let mut forwarded = match ip {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    };
    if let Some(host) = client_host.as_ref().and_then(|h| h.to_str().ok()) {
        if !host.contains('"') && !host.contains('\\') {
            forwarded.push_str(&format!(";host=\"{host}\""));
        }
    }
    forwarded.push_str(";proto=http");
    append_list(&mut out, "forwarded", &forwarded);
    out
}

/// Appends `item` to a comma-separated header, on the same line.
fn append_list(headers: &mut HeaderMap, name: &'static str, item: &str) {
    let name = HeaderName::from_static(name);
    let joined = match headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .fold(String::new(), |mut acc, v| {
            if !acc.is_empty() {
                acc.push_str(", ");
            }
            acc.push_str(v);
            acc
        }) {
        ref earlier if !earlier.is_empty() => format!("{earlier}, {item}"),
        _ => item.to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&joined) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn upgrade_keeps_the_handshake_and_adds_forwarding() {
        let client = headers(&[
            ("host", "proxy.example:8080"),
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade, X-Hop"),
            ("x-hop", "drop me"),
            ("keep-alive", "timeout=5"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat, superchat"),
            ("sec-websocket-extensions", "permessage-deflate"),
            ("origin", "https://app.example"),
            ("cookie", "a=1"),
            ("authorization", "Bearer t"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        let backend: Backend = "ws://10.0.0.5:9000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:5555".parse().unwrap();
        let out = upstream(&client, remote, &backend, false, true);
        for name in [
            "sec-websocket-key",
            "sec-websocket-version",
            "sec-websocket-protocol",
            "sec-websocket-extensions",
            "origin",
            "cookie",
            "authorization",
        ] {
            assert_eq!(out.get(name), client.get(name), "{name}");
        }
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["connection"], "Upgrade");
        assert!(!out.contains_key("x-hop") && !out.contains_key("keep-alive"));
        assert_eq!(out["host"], "10.0.0.5:9000");
        assert_eq!(out["x-forwarded-host"], "proxy.example:8080");
        assert_eq!(out["x-forwarded-for"], "203.0.113.7, 192.0.2.1");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(
            out["forwarded"],
            "for=192.0.2.1;host=\"proxy.example:8080\";proto=http"
        );
    }

    #[test]
    fn plain_request_drops_upgrade_and_keeps_host_when_asked() {
        let client = headers(&[
            ("host", "app.example"),
            ("upgrade", "h2c"),
            ("connection", "Upgrade"),
        ]);
        let backend: Backend = "ws://b:1".parse().unwrap();
        let remote: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let out = upstream(&client, remote, &backend, true, false);
        assert!(!out.contains_key("upgrade") && !out.contains_key("connection"));
        assert_eq!(out["host"], "app.example");
        assert_eq!(
            out["forwarded"],
            "for=\"[2001:db8::1]\";host=\"app.example\";proto=http"
        );
        assert!(wants_websocket(&headers(&[("upgrade", "foo, WebSocket")])));
        assert!(!wants_websocket(&client));
    }
}
