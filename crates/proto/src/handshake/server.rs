//! The server's side of the opening handshake (RFC 6455 section 4.2):
//! check the request, choose a subprotocol and extensions, answer 101 or a
//! refusal.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::headers::{
    display_value, has_token, list_elements, trim_ows, write_header, SEC_WEBSOCKET_ACCEPT,
    SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION,
};
use super::key::{accept_key, is_valid_key};
use super::HandshakeError;
use crate::extension::{DeflateConfig, DeflateParams};

/// What a valid upgrade request asks for.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// The `Sec-WebSocket-Key`, as sent (base64 of 16 bytes).
    pub key: String,
    /// Every `Sec-WebSocket-Protocol` value, split on commas and trimmed, in
    /// the client's order of preference.
    pub protocols: Vec<String>,
    /// The raw `Sec-WebSocket-Extensions` header values, one per line.
    pub extensions: Vec<String>,
}

/// Checks that `req` is a WebSocket upgrade request (RFC 6455 section 4.2.1).
///
/// Generic over the body so it accepts both requests from
/// [`parse_request`](super::parse_request) and requests from hyper or axum.
/// Checks, in order: method GET, HTTP/1.1 or later, `Host` (or an absolute
/// request target), `Upgrade` listing `websocket`, `Connection` listing
/// `upgrade` (both case-insensitive, over every line of the header), one
/// `Sec-WebSocket-Key` that is base64 of 16 bytes, and
/// `Sec-WebSocket-Version: 13`.
pub fn validate_request<B>(req: &Request<B>) -> Result<UpgradeRequest, HandshakeError> {
    if req.method() != Method::GET {
        return Err(HandshakeError::MethodNotGet);
    }
    if req.version() < Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    let headers = req.headers();
    if !headers.contains_key(header::HOST) && req.uri().authority().is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !headers.contains_key(header::UPGRADE) {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !has_token(headers, header::UPGRADE.as_str(), "websocket") {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    if !has_token(headers, header::CONNECTION.as_str(), "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = single_key(headers)?;
    check_version(headers)?;
    Ok(UpgradeRequest {
        key,
        protocols: protocols(headers)?,
        extensions: extensions(headers)?,
    })
}

fn single_key(headers: &HeaderMap) -> Result<String, HandshakeError> {
    let mut keys = headers.get_all(SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(if headers.contains_key(SEC_WEBSOCKET_KEY) {
            HandshakeError::InvalidKey
        } else {
            HandshakeError::MissingKey
        });
    };
    let key = trim_ows(key.as_bytes());
    if !is_valid_key(key) {
        return Err(HandshakeError::InvalidKey);
    }
    // Valid base64 is ASCII.
    Ok(String::from_utf8_lossy(key).into_owned())
}

fn check_version(headers: &HeaderMap) -> Result<(), HandshakeError> {
    let sent: Vec<&[u8]> = headers
        .get_all(SEC_WEBSOCKET_VERSION)
        .iter()
        .map(|v| trim_ows(v.as_bytes()))
        .collect();
    match sent.as_slice() {
        [b"13"] => Ok(()),
        _ => Err(HandshakeError::UnsupportedVersion(display_value(
            &sent.join(&b", "[..]),
        ))),
    }
}

fn protocols(headers: &HeaderMap) -> Result<Vec<String>, HandshakeError> {
    list_elements(headers, SEC_WEBSOCKET_PROTOCOL)
        .map(|p| {
            std::str::from_utf8(p).map(str::to_owned).map_err(|_| {
                HandshakeError::Malformed("Sec-WebSocket-Protocol is not valid UTF-8".into())
            })
        })
        .collect()
}

fn extensions(headers: &HeaderMap) -> Result<Vec<String>, HandshakeError> {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                HandshakeError::Malformed("Sec-WebSocket-Extensions is not visible ASCII".into())
            })
        })
        .collect()
}

/// The first of the client's `offered` protocols, in the client's order,
/// that is in `supported` (names compare exactly).
pub fn select_protocol<'a>(offered: &[String], supported: &'a [String]) -> Option<&'a str> {
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| *s == o))
        .map(String::as_str)
}

/// The outcome of [`accept`]: the 101 response and what it agreed to.
#[derive(Debug)]
pub struct Accepted {
    /// The `101 Switching Protocols` response to send.
    pub response: Response<()>,
    /// The subprotocol chosen, if any.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters agreed, if deflate was negotiated.
    pub deflate: Option<DeflateParams>,
}

/// Builds the 101 response to a validated request: `Upgrade: websocket`,
/// `Connection: Upgrade`, `Sec-WebSocket-Accept`, the chosen
/// `Sec-WebSocket-Protocol` (only when one was chosen, see
/// [`select_protocol`]) and, when `deflate` is given and the client offered
/// permessage-deflate acceptably, `Sec-WebSocket-Extensions`.
///
/// Fails with [`HandshakeError::Malformed`] when the client's extension
/// offer cannot be parsed.
pub fn accept(
    req: &UpgradeRequest,
    supported_protocols: &[String],
    deflate: Option<&DeflateConfig>,
) -> Result<Accepted, HandshakeError> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        value(&accept_key(req.key.as_bytes()))?,
    );

    let protocol = select_protocol(&req.protocols, supported_protocols);
    if let Some(protocol) = protocol {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value(protocol)?);
    }

    let mut params = None;
    if let Some(config) = deflate {
        let offers: Vec<&str> = req.extensions.iter().map(String::as_str).collect();
        let negotiated = config
            .negotiate_server(&offers)
            .map_err(|e| HandshakeError::Malformed(format!("Sec-WebSocket-Extensions: {e}")))?;
        if let Some((agreed, answer)) = negotiated {
            headers.insert(SEC_WEBSOCKET_EXTENSIONS, value(&answer)?);
            params = Some(agreed);
        }
    }
    Ok(Accepted {
        response,
        protocol: protocol.map(str::to_owned),
        deflate: params,
    })
}

fn value(s: &str) -> Result<HeaderValue, HandshakeError> {
    HeaderValue::from_str(s).map_err(|_| {
        HandshakeError::Malformed(format!(
            "{:?} cannot be a header value",
            display_value(s.as_bytes())
        ))
    })
}

/// Appends the response head (status line, headers, blank line) and then
/// `body` to `out`.
///
/// Adds `Content-Length` when `body` is not empty and the response carries
/// neither `Content-Length` nor `Transfer-Encoding`.
pub fn write_response<B>(resp: &Response<B>, body: &[u8], out: &mut Vec<u8>) {
    let version: &[u8] = if resp.version() == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    };
    out.extend_from_slice(version);
    out.extend_from_slice(resp.status().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.status().canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        write_header(out, name, value);
    }
    let headers = resp.headers();
    if !body.is_empty()
        && !headers.contains_key(header::CONTENT_LENGTH)
        && !headers.contains_key(header::TRANSFER_ENCODING)
    {
        write_header(out, &header::CONTENT_LENGTH, &HeaderValue::from(body.len()));
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The refusal to send for a failed [`validate_request`]: the status of
/// [`HandshakeError::status`], a one-line plain-text body with the error's
/// message, `Connection: close` and `Content-Length`; plus `Allow: GET` on
/// 405, `Sec-WebSocket-Version: 13` on a version error, and on 426
/// `Upgrade: websocket` with `Connection: Upgrade, close` (RFC 9110 requires
/// both on a 426).
pub fn rejection(err: &HandshakeError) -> Response<String> {
    let body = format!("{err}\n");
    let status = err.status();
    let mut response = Response::new(String::new());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if status == StatusCode::UPGRADE_REQUIRED {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, close"),
        );
    } else {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    match err {
        HandshakeError::MethodNotGet => {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        HandshakeError::UnsupportedVersion(_) => {
            headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        _ => {}
    }
    *response.body_mut() = body;
    response
}

#[cfg(test)]
mod tests {
    use super::super::parse_request;
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(lines: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/chat");
        for (name, value) in lines {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn valid_lines() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Host", "server.example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", KEY),
            ("Sec-WebSocket-Version", "13"),
        ]
    }

    fn without(name: &str) -> Request<()> {
        let lines: Vec<_> = valid_lines()
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect();
        request(&lines)
    }

    fn with(name: &'static str, value: &'static str) -> Request<()> {
        let mut lines: Vec<_> = valid_lines()
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect();
        lines.push((name, value));
        request(&lines)
    }

    fn refused(req: &Request<()>) -> (HandshakeError, StatusCode) {
        let err = validate_request(req).unwrap_err();
        let status = err.status();
        (err, status)
    }

    #[test]
    fn valid_request_is_accepted_with_rfc_accept_key() {
        let upgrade = validate_request(&request(&valid_lines())).unwrap();
        assert_eq!(upgrade.key, KEY);
        assert!(upgrade.protocols.is_empty());
        assert!(upgrade.extensions.is_empty());
        let accepted = accept(&upgrade, &[], None).unwrap();
        let r = &accepted.response;
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(r.headers()["upgrade"], "websocket");
        assert_eq!(r.headers()["connection"], "Upgrade");
        assert_eq!(
            r.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(!r.headers().contains_key("sec-websocket-protocol"));
        assert!(!r.headers().contains_key("sec-websocket-extensions"));
        assert_eq!(accepted.protocol, None);
        assert!(accepted.deflate.is_none());
    }

    #[test]
    fn parsed_request_validates() {
        let bytes = b"GET /chat HTTP/1.1\r\nhost: a\r\nUPGRADE: WebSocket\r\n\
            connection: keep-alive, Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            sec-websocket-version: 13\r\n\r\n";
        let (req, _) = parse_request(bytes, 4096).unwrap().unwrap();
        assert_eq!(validate_request(&req).unwrap().key, KEY);
    }

    #[test]
    fn refuses_non_get_with_405_and_allow() {
        let mut req = request(&valid_lines());
        *req.method_mut() = Method::POST;
        let (err, status) = refused(&req);
        assert_eq!(err, HandshakeError::MethodNotGet);
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(rejection(&err).headers()["allow"], "GET");
    }

    #[test]
    fn refuses_http_10_with_505() {
        let mut req = request(&valid_lines());
        *req.version_mut() = Version::HTTP_10;
        let (err, status) = refused(&req);
        assert!(matches!(err, HandshakeError::HttpVersion));
        assert_eq!(status, StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }

    #[test]
    fn http_2_and_absolute_form_are_fine() {
        let mut req = without("Host");
        *req.version_mut() = Version::HTTP_2;
        *req.uri_mut() = "http://example.com/chat".parse().unwrap();
        assert!(validate_request(&req).is_ok());
    }

    #[test]
    fn refuses_missing_host_with_400() {
        assert_eq!(
            refused(&without("Host")),
            (HandshakeError::MissingHost, StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn plain_http_request_gets_426() {
        let req = request(&[("Host", "a")]);
        let (err, status) = refused(&req);
        assert_eq!(err, HandshakeError::MissingUpgrade);
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
        let r = rejection(&err);
        assert_eq!(r.headers()["upgrade"], "websocket");
    }

    #[test]
    fn refuses_other_upgrade_with_400() {
        let (err, status) = refused(&with("Upgrade", "h2c"));
        assert_eq!(err, HandshakeError::NotWebSocketUpgrade);
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn refuses_missing_connection_upgrade_with_400() {
        for req in [without("Connection"), with("Connection", "keep-alive")] {
            assert_eq!(
                refused(&req),
                (
                    HandshakeError::MissingConnectionUpgrade,
                    StatusCode::BAD_REQUEST
                )
            );
        }
    }

    #[test]
    fn tokens_split_across_lines_and_cases() {
        let mut lines = valid_lines();
        lines.retain(|(n, _)| *n != "Connection" && *n != "Upgrade");
        lines.extend([
            ("Connection", "keep-alive"),
            ("Connection", " UPGRADE "),
            ("Upgrade", "h2c"),
            ("Upgrade", "foo/2, WebSocket"),
        ]);
        assert!(validate_request(&request(&lines)).is_ok());
    }

    #[test]
    fn refuses_missing_key_with_400() {
        assert_eq!(
            refused(&without("Sec-WebSocket-Key")),
            (HandshakeError::MissingKey, StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn refuses_invalid_keys_with_400() {
        for bad in [
            "",
            "c2hvcnQ=",
            "dGhlIHNhbXBsZSBub25jZQ",
            "!GhlIHNhbXBsZSBub25jZQ==",
            "AAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(
                refused(&with("Sec-WebSocket-Key", bad)),
                (HandshakeError::InvalidKey, StatusCode::BAD_REQUEST),
                "{bad:?}"
            );
        }
        let mut lines = valid_lines();
        lines.push(("Sec-WebSocket-Key", KEY));
        assert_eq!(refused(&request(&lines)).0, HandshakeError::InvalidKey);
    }

    #[test]
    fn refuses_other_versions_with_426() {
        let (err, status) = refused(&with("Sec-WebSocket-Version", "8"));
        assert_eq!(err, HandshakeError::UnsupportedVersion("8".into()));
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(
            err.to_string(),
            "Sec-WebSocket-Version 8 is not supported; this server speaks 13"
        );
        let r = rejection(&err);
        assert_eq!(r.headers()["sec-websocket-version"], "13");

        let (err, status) = refused(&without("Sec-WebSocket-Version"));
        assert_eq!(err, HandshakeError::UnsupportedVersion(String::new()));
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
    }

    #[test]
    fn protocols_split_and_trimmed_in_order() {
        let mut lines = valid_lines();
        lines.push(("Sec-WebSocket-Protocol", "chat ,  superchat"));
        lines.push(("Sec-WebSocket-Protocol", ",v3,"));
        lines.push((
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        ));
        lines.push(("Sec-WebSocket-Extensions", "x-foo"));
        let upgrade = validate_request(&request(&lines)).unwrap();
        assert_eq!(upgrade.protocols, ["chat", "superchat", "v3"]);
        assert_eq!(
            upgrade.extensions,
            ["permessage-deflate; client_max_window_bits", "x-foo"]
        );
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn select_protocol_follows_the_clients_order() {
        let offered = strings(&["b", "a", "c"]);
        assert_eq!(select_protocol(&offered, &strings(&["a", "b"])), Some("b"));
        assert_eq!(select_protocol(&offered, &strings(&["c", "a"])), Some("a"));
        assert_eq!(select_protocol(&offered, &strings(&["d"])), None);
        assert_eq!(select_protocol(&[], &strings(&["a"])), None);
        assert_eq!(select_protocol(&offered, &strings(&["B"])), None);
    }

    #[test]
    fn accept_sets_the_chosen_protocol() {
        let upgrade = UpgradeRequest {
            key: KEY.into(),
            protocols: strings(&["x", "chat"]),
            extensions: vec![],
        };
        let accepted = accept(&upgrade, &strings(&["chat", "x"]), None).unwrap();
        assert_eq!(accepted.protocol.as_deref(), Some("x"));
        assert_eq!(accepted.response.headers()["sec-websocket-protocol"], "x");
    }

    #[test]
    fn write_response_serialises_a_101() {
        let upgrade = UpgradeRequest {
            key: KEY.into(),
            protocols: strings(&["chat"]),
            extensions: vec![],
        };
        let accepted = accept(&upgrade, &strings(&["chat"]), None).unwrap();
        let mut out = Vec::new();
        write_response(&accepted.response, b"", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\r\n"
        );
    }

    #[test]
    fn rejection_is_plain_text_and_closes() {
        let err = HandshakeError::MissingKey;
        let r = rejection(&err);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.body(), "missing Sec-WebSocket-Key header\n");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(r.headers()["connection"], "close");
        let mut out = Vec::new();
        write_response(&r, r.body().as_bytes(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 33\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\nmissing Sec-WebSocket-Key header\n"),
            "{text}"
        );
    }

    #[test]
    fn write_response_adds_content_length_when_missing() {
        let r = Response::builder().status(404).body(()).unwrap();
        let mut out = Vec::new();
        write_response(&r, b"nope", &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"
        );
    }

    #[test]
    fn too_large_rejection_is_431() {
        let r = rejection(&HandshakeError::HeadersTooLarge { limit: 8192 });
        assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(r.body(), "headers exceed 8192 bytes\n");
    }

    #[test]
    fn accept_negotiates_deflate_when_offered() {
        let config = DeflateConfig::default();
        let offered = UpgradeRequest {
            key: KEY.into(),
            protocols: vec![],
            extensions: strings(&["x-foo, permessage-deflate; client_max_window_bits"]),
        };
        let accepted = accept(&offered, &[], Some(&config)).unwrap();
        assert!(accepted.deflate.is_some());
        let answer = &accepted.response.headers()["sec-websocket-extensions"];
        assert!(answer.to_str().unwrap().starts_with("permessage-deflate"));

        let not_offered = UpgradeRequest {
            extensions: vec![],
            ..offered.clone()
        };
        let accepted = accept(&not_offered, &[], Some(&config)).unwrap();
        assert!(accepted.deflate.is_none());
        assert!(!accepted
            .response
            .headers()
            .contains_key("sec-websocket-extensions"));

        // Offered, but the server has deflate turned off.
        let accepted = accept(&offered, &[], None).unwrap();
        assert!(accepted.deflate.is_none());
        assert!(!accepted
            .response
            .headers()
            .contains_key("sec-websocket-extensions"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut wire = b"GET / HTTP/1.1\r\n".to_vec();
            wire.extend_from_slice(&bytes);
            for buf in [&bytes[..], &wire[..]] {
                match parse_request(buf, 256) {
                    Ok(Some((req, len))) => {
                        proptest::prop_assert!(len <= buf.len().min(256));
                        match validate_request(&req) {
                            Ok(upgrade) => {
                                let _ = accept(&upgrade, &strings(&["a"]), Some(&DeflateConfig::default()));
                            }
                            Err(err) => {
                                let r = rejection(&err);
                                let mut out = Vec::new();
                                write_response(&r, r.body().as_bytes(), &mut out);
                            }
                        }
                    }
                    Ok(None) => proptest::prop_assert!(buf.len() <= 256),
                    Err(err) => {
                        let _ = rejection(&err);
                    }
                }
            }
        }
    }
}
