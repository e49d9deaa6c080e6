//! The client's side of the opening handshake (RFC 6455 section 4.1): build
//! the request, then check the server's answer.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Uri};

use super::headers::{
    display_value, has_token, is_token, list_elements, trim_ows, write_header,
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL,
};
use super::key::{accept_key, generate_key};
use super::HandshakeError;
use crate::extension::{DeflateConfig, DeflateParams};

/// The headers the handshake itself sets; extra headers cannot replace them.
const OWN_HEADERS: [&str; 6] = [
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
];

/// A client's opening handshake in progress: what it sent, so that the
/// response can be checked against it.
#[derive(Debug)]
pub struct ClientHandshake {
    key: String,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
}

/// What the server agreed to in a valid 101 response.
#[derive(Debug, Clone)]
pub struct ClientNegotiated {
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters, if the server accepted deflate.
    pub deflate: Option<DeflateParams>,
}

impl ClientHandshake {
    /// Builds the upgrade request for a `ws://` or `wss://` `uri`.
    ///
    /// The request line carries the path and query; `Host` has the port
    /// unless it is the scheme's default (80, 443). Then `Upgrade`,
    /// `Connection`, a fresh `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`,
    /// `Sec-WebSocket-Protocol` (comma-joined) when `protocols` is not empty,
    /// and `Sec-WebSocket-Extensions` from [`DeflateConfig::offer`] when
    /// `deflate` is given. `extra_headers` come last; they replace a header of
    /// the same name (`Host`, say) in place, except the handshake's own
    /// (`Upgrade`, `Connection`, `Sec-WebSocket-*`), which are ignored there:
    /// pass protocols and deflate through their own arguments.
    ///
    /// Returns the handshake state and the request bytes to send.
    pub fn new(
        uri: &Uri,
        protocols: &[String],
        extra_headers: &HeaderMap,
        deflate: Option<&DeflateConfig>,
    ) -> Result<(ClientHandshake, Vec<u8>), HandshakeError> {
        let default_port = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => 80,
            Some(s) if s.eq_ignore_ascii_case("wss") => 443,
            Some(s) => {
                return Err(HandshakeError::BadUri(format!(
                    "scheme {s:?} is not ws or wss"
                )))
            }
            None => {
                return Err(HandshakeError::BadUri(format!(
                    "{uri} has no scheme (ws:// or wss://)"
                )))
            }
        };
        let host = match uri.host() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(HandshakeError::BadUri(format!("{uri} has no host"))),
        };
        let host = match uri.port_u16() {
            Some(port) if port != default_port => format!("{host}:{port}"),
            _ => host.to_owned(),
        };
        if let Some(bad) = protocols.iter().find(|p| !is_token(p)) {
            return Err(HandshakeError::InvalidProtocol(display_value(
                bad.as_bytes(),
            )));
        }
        let key = generate_key();

        let mut own: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(7);
        own.push((header::HOST, bad_uri_value(&host)?));
        own.push((header::UPGRADE, HeaderValue::from_static("websocket")));
        own.push((header::CONNECTION, HeaderValue::from_static("Upgrade")));
        own.push((HeaderName::from_static("sec-websocket-key"), ascii(&key)?));
        own.push((
            HeaderName::from_static("sec-websocket-version"),
            HeaderValue::from_static("13"),
        ));
        if !protocols.is_empty() {
            // Tokens checked above: always a valid value.
            own.push((
                HeaderName::from_static("sec-websocket-protocol"),
                ascii(&protocols.join(", "))?,
            ));
        }
        if let Some(config) = deflate {
            own.push((
                HeaderName::from_static("sec-websocket-extensions"),
                ascii(&config.offer())?,
            ));
        }

        let target = match uri.query() {
            Some(query) => format!("{}?{query}", uri.path()),
            None => uri.path().to_owned(),
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(if target.is_empty() {
            b"/"
        } else {
            target.as_bytes()
        });
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let replaceable = |name: &HeaderName| !OWN_HEADERS.contains(&name.as_str());
        for (name, value) in &own {
            if replaceable(name) && extra_headers.contains_key(name) {
                for value in extra_headers.get_all(name) {
                    write_header(&mut out, name, value);
                }
            } else {
                write_header(&mut out, name, value);
            }
        }
        for (name, value) in extra_headers {
            if replaceable(name) && !own.iter().any(|(n, _)| n == name) {
                write_header(&mut out, name, value);
            }
        }
        out.extend_from_slice(b"\r\n");

        let handshake = ClientHandshake {
            key,
            protocols: protocols.to_vec(),
            deflate: deflate.cloned(),
        };
        Ok((handshake, out))
    }

    /// The `Sec-WebSocket-Key` this handshake sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Parses a response head from the start of `buf`, with the rules of
    /// [`parse_request`](super::parse_request): `Ok(None)` while incomplete,
    /// else the response and its head's length (what follows is WebSocket
    /// data).
    pub fn parse_response(
        &self,
        buf: &[u8],
        max_header_size: usize,
    ) -> Result<Option<(Response<()>, usize)>, HandshakeError> {
        super::parse::parse_response(buf, max_header_size)
    }

    /// Checks the server's response (RFC 6455 section 4.1, the client's
    /// checks): status 101, `Upgrade: websocket`, `Connection: Upgrade`, the
    /// `Sec-WebSocket-Accept` that matches our key, a `Sec-WebSocket-Protocol`
    /// we offered (or none), and a `Sec-WebSocket-Extensions` naming only
    /// permessage-deflate, once, and only if we offered it.
    pub fn validate_response<B>(
        &self,
        resp: &Response<B>,
    ) -> Result<ClientNegotiated, HandshakeError> {
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::Rejected {
                status: resp.status().as_u16(),
            });
        }
        let headers = resp.headers();
        if !has_token(headers, header::UPGRADE.as_str(), "websocket") {
            return Err(HandshakeError::ResponseMissingUpgrade);
        }
        if !has_token(headers, header::CONNECTION.as_str(), "upgrade") {
            return Err(HandshakeError::ResponseMissingConnectionUpgrade);
        }
        let mut accepts = headers.get_all(SEC_WEBSOCKET_ACCEPT).iter();
        match (accepts.next(), accepts.next()) {
            (Some(sent), None)
                if trim_ows(sent.as_bytes()) == accept_key(self.key.as_bytes()).as_bytes() => {}
            _ => return Err(HandshakeError::AcceptMismatch),
        }
        Ok(ClientNegotiated {
            protocol: self.check_protocol(headers)?,
            deflate: self.check_extensions(headers)?,
        })
    }

    fn check_protocol(&self, headers: &HeaderMap) -> Result<Option<String>, HandshakeError> {
        let chosen: Vec<&[u8]> = list_elements(headers, SEC_WEBSOCKET_PROTOCOL).collect();
        match chosen.as_slice() {
            [] => Ok(None),
            [one] => match self.protocols.iter().find(|p| p.as_bytes() == *one) {
                Some(offered) => Ok(Some(offered.clone())),
                None => Err(HandshakeError::UnexpectedProtocol(display_value(one))),
            },
            // The server must choose one; a list is never something we offered.
            many => Err(HandshakeError::UnexpectedProtocol(display_value(
                &many.join(&b", "[..]),
            ))),
        }
    }

    fn check_extensions(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<DeflateParams>, HandshakeError> {
        let mut deflate = None;
        for element in list_elements(headers, SEC_WEBSOCKET_EXTENSIONS) {
            let name = trim_ows(element.split(|&b| b == b';').next().unwrap_or_default());
            if !name.eq_ignore_ascii_case(b"permessage-deflate") {
                return Err(HandshakeError::Extension(format!(
                    "server chose extension {:?}, which we did not offer",
                    display_value(name)
                )));
            }
            let Some(config) = &self.deflate else {
                return Err(HandshakeError::Extension(
                    "server chose permessage-deflate, which we did not offer".into(),
                ));
            };
            if deflate.is_some() {
                return Err(HandshakeError::Extension(
                    "server chose permessage-deflate more than once".into(),
                ));
            }
            let element = std::str::from_utf8(element).map_err(|_| {
                HandshakeError::Extension(
                    "permessage-deflate parameters are not valid UTF-8".into(),
                )
            })?;
            let params = config
                .negotiate_client(element)
                .map_err(|e| HandshakeError::Extension(e.to_string()))?;
            deflate = Some(params);
        }
        Ok(deflate)
    }
}

fn bad_uri_value(s: &str) -> Result<HeaderValue, HandshakeError> {
    HeaderValue::from_str(s)
        .map_err(|_| HandshakeError::BadUri(format!("{s:?} cannot be a Host header")))
}

/// A value we built ourselves from checked parts.
fn ascii(s: &str) -> Result<HeaderValue, HandshakeError> {
    HeaderValue::from_str(s)
        .map_err(|_| HandshakeError::InvalidProtocol(display_value(s.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn client(
        uri: &str,
        protocols: &[&str],
        deflate: Option<&DeflateConfig>,
    ) -> (ClientHandshake, String) {
        let uri: Uri = uri.parse().unwrap();
        let (hs, bytes) =
            ClientHandshake::new(&uri, &strings(protocols), &HeaderMap::new(), deflate).unwrap();
        (hs, String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn request_lines_with_port_and_query() {
        let (hs, text) = client("ws://host:8080/path?q=1", &[], None);
        let expected = format!(
            "GET /path?q=1 HTTP/1.1\r\n\
             Host: host:8080\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            hs.key()
        );
        assert_eq!(text, expected);
        assert!(super::super::key::is_valid_key(hs.key().as_bytes()));
    }

    #[test]
    fn request_lines_for_wss_without_port() {
        let (hs, text) = client("wss://host/", &["chat", "superchat"], None);
        let expected = format!(
            "GET / HTTP/1.1\r\n\
             Host: host\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\r\n",
            hs.key()
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn default_ports_are_omitted_and_others_kept() {
        assert!(client("ws://h:80", &[], None).1.contains("\r\nHost: h\r\n"));
        assert!(client("wss://h:443/x", &[], None)
            .1
            .contains("\r\nHost: h\r\n"));
        assert!(client("wss://h:80/x", &[], None)
            .1
            .contains("\r\nHost: h:80\r\n"));
        assert!(client("ws://h", &[], None)
            .1
            .starts_with("GET / HTTP/1.1\r\n"));
        assert!(client("ws://h?x=1", &[], None)
            .1
            .starts_with("GET /?x=1 HTTP/1.1\r\n"));
        assert!(client("ws://[::1]:9000/", &[], None)
            .1
            .contains("\r\nHost: [::1]:9000\r\n"));
    }

    #[test]
    fn the_request_parses_and_validates_on_the_server() {
        let (hs, text) = client("ws://example.com:9001/chat", &["v1"], None);
        let (req, len) = super::super::parse_request(text.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        assert_eq!(len, text.len());
        let upgrade = super::super::validate_request(&req).unwrap();
        assert_eq!(upgrade.key, hs.key());
        assert_eq!(upgrade.protocols, ["v1"]);
    }

    #[test]
    fn extra_headers_replace_in_place_but_not_the_handshakes_own() {
        let mut extra = HeaderMap::new();
        extra.insert(header::HOST, HeaderValue::from_static("front.example"));
        extra.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://front.example"),
        );
        extra.insert(
            "sec-websocket-key",
            HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="),
        );
        extra.insert("sec-websocket-version", HeaderValue::from_static("8"));
        extra.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let uri: Uri = "ws://back:1234/".parse().unwrap();
        let (hs, bytes) = ClientHandshake::new(&uri, &[], &extra, None).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let expected = format!(
            "GET / HTTP/1.1\r\n\
             Host: front.example\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Origin: https://front.example\r\n\r\n",
            hs.key()
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn bad_uris_and_protocols() {
        let none = HeaderMap::new();
        for uri in ["http://h/", "/just/a/path", "h:80"] {
            let uri: Uri = uri.parse().unwrap();
            let err = ClientHandshake::new(&uri, &[], &none, None).unwrap_err();
            assert!(matches!(err, HandshakeError::BadUri(_)), "{uri}: {err:?}");
        }
        let uri: Uri = "ws://h/".parse().unwrap();
        for bad in ["", "a b", "a,b", "x\r\ny"] {
            let err = ClientHandshake::new(&uri, &strings(&[bad]), &none, None).unwrap_err();
            assert!(
                matches!(err, HandshakeError::InvalidProtocol(_)),
                "{bad:?}: {err:?}"
            );
        }
    }

    fn response(hs: &ClientHandshake, status: u16, extra: &[(&str, &str)]) -> Response<()> {
        let accept = accept_key(hs.key().as_bytes());
        let mut builder = Response::builder()
            .status(status)
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Accept", accept);
        for (name, value) in extra {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn valid_response_is_accepted() {
        let (hs, _) = client("ws://h/", &["a", "b"], None);
        let negotiated = hs
            .validate_response(&response(&hs, 101, &[("Sec-WebSocket-Protocol", "b")]))
            .unwrap();
        assert_eq!(negotiated.protocol.as_deref(), Some("b"));
        assert!(negotiated.deflate.is_none());
        let negotiated = hs.validate_response(&response(&hs, 101, &[])).unwrap();
        assert_eq!(negotiated.protocol, None);
    }

    #[test]
    fn server_response_round_trip() {
        let (hs, text) = client("ws://h/", &["b", "a"], None);
        let (req, _) = super::super::parse_request(text.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        let upgrade = super::super::validate_request(&req).unwrap();
        let accepted = super::super::accept(&upgrade, &strings(&["a", "b"]), None).unwrap();
        let mut wire = Vec::new();
        super::super::write_response(&accepted.response, b"", &mut wire);
        wire.extend_from_slice(b"\x81\x00");
        let (resp, len) = hs.parse_response(&wire, 8192).unwrap().unwrap();
        assert_eq!(&wire[len..], b"\x81\x00");
        let negotiated = hs.validate_response(&resp).unwrap();
        assert_eq!(negotiated.protocol.as_deref(), Some("b"));
    }

    #[test]
    fn rejected_statuses() {
        let (hs, _) = client("ws://h/", &[], None);
        for status in [200, 403] {
            let err = hs
                .validate_response(&response(&hs, status, &[]))
                .unwrap_err();
            assert_eq!(err, HandshakeError::Rejected { status });
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        }
    }

    #[test]
    fn bad_accept_is_refused() {
        let (hs, _) = client("ws://h/", &[], None);
        let bad = Response::builder()
            .status(101)
            .header("Upgrade", "websocket")
            .header("Connection", "upgrade")
            .header("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(())
            .unwrap();
        assert_eq!(
            hs.validate_response(&bad).unwrap_err(),
            HandshakeError::AcceptMismatch
        );
        let missing = Response::builder()
            .status(101)
            .header("Upgrade", "websocket")
            .header("Connection", "upgrade")
            .body(())
            .unwrap();
        assert_eq!(
            hs.validate_response(&missing).unwrap_err(),
            HandshakeError::AcceptMismatch
        );
        let twice = response(&hs, 101, &[("Sec-WebSocket-Accept", "x")]);
        assert_eq!(
            hs.validate_response(&twice).unwrap_err(),
            HandshakeError::AcceptMismatch
        );
    }

    #[test]
    fn missing_upgrade_or_connection_in_response() {
        let (hs, _) = client("ws://h/", &[], None);
        let accept = accept_key(hs.key().as_bytes());
        let no_upgrade = Response::builder()
            .status(101)
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Accept", accept.as_str())
            .body(())
            .unwrap();
        assert_eq!(
            hs.validate_response(&no_upgrade).unwrap_err(),
            HandshakeError::ResponseMissingUpgrade
        );
        let no_connection = Response::builder()
            .status(101)
            .header("Upgrade", "WebSocket")
            .header("Sec-WebSocket-Accept", accept.as_str())
            .body(())
            .unwrap();
        assert_eq!(
            hs.validate_response(&no_connection).unwrap_err(),
            HandshakeError::ResponseMissingConnectionUpgrade
        );
    }

    #[test]
    fn protocol_not_offered_is_refused() {
        let (hs, _) = client("ws://h/", &["a"], None);
        let err = hs
            .validate_response(&response(&hs, 101, &[("Sec-WebSocket-Protocol", "b")]))
            .unwrap_err();
        assert_eq!(err, HandshakeError::UnexpectedProtocol("b".into()));
        let err = hs
            .validate_response(&response(&hs, 101, &[("Sec-WebSocket-Protocol", "a, a")]))
            .unwrap_err();
        assert_eq!(err, HandshakeError::UnexpectedProtocol("a, a".into()));
        let (none, _) = client("ws://h/", &[], None);
        let err = none
            .validate_response(&response(&none, 101, &[("Sec-WebSocket-Protocol", "a")]))
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn extensions_not_offered_are_refused() {
        let (hs, _) = client("ws://h/", &[], None);
        let err = hs
            .validate_response(&response(
                &hs,
                101,
                &[("Sec-WebSocket-Extensions", "permessage-deflate")],
            ))
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Extension(_)), "{err:?}");

        let config = DeflateConfig::default();
        let (hs, _) = client("ws://h/", &[], Some(&config));
        let err = hs
            .validate_response(&response(
                &hs,
                101,
                &[("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")],
            ))
            .unwrap_err();
        assert_eq!(
            err,
            HandshakeError::Extension(
                "server chose extension \"x-webkit-deflate-frame\", which we did not offer".into()
            )
        );
        let twice = response(
            &hs,
            101,
            &[
                ("Sec-WebSocket-Extensions", "permessage-deflate"),
                ("Sec-WebSocket-Extensions", "permessage-deflate"),
            ],
        );
        assert!(matches!(
            hs.validate_response(&twice),
            Err(HandshakeError::Extension(_))
        ));
    }

    #[test]
    fn no_extensions_means_no_deflate() {
        let config = DeflateConfig::default();
        let (hs, _) = client("ws://h/", &[], Some(&config));
        assert!(hs
            .validate_response(&response(&hs, 101, &[]))
            .unwrap()
            .deflate
            .is_none());
    }

    #[test]
    fn response_parse_limits_apply() {
        let (hs, _) = client("ws://h/", &[], None);
        let mut endless = b"HTTP/1.1 101 Switching Protocols\r\nX: ".to_vec();
        endless.resize(5000, b'a');
        assert_eq!(
            hs.parse_response(&endless, 4096).map(|o| o.map(|(_, n)| n)),
            Err(HandshakeError::HeadersTooLarge { limit: 4096 })
        );
    }

    #[test]
    fn deflate_round_trip() {
        let config = DeflateConfig::default();
        let (hs, text) = client("ws://h/", &[], Some(&config));
        assert!(text.contains(&format!(
            "\r\nSec-WebSocket-Extensions: {}\r\n",
            config.offer()
        )));
        let (req, _) = super::super::parse_request(text.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        let upgrade = super::super::validate_request(&req).unwrap();
        let accepted = super::super::accept(&upgrade, &[], Some(&config)).unwrap();
        assert!(accepted
            .response
            .headers()
            .contains_key("sec-websocket-extensions"));
        let negotiated = hs.validate_response(&accepted.response).unwrap();
        assert_eq!(negotiated.deflate, accepted.deflate);
        assert!(negotiated.deflate.is_some());
    }

    #[test]
    fn bad_deflate_parameters_are_an_extension_error() {
        let config = DeflateConfig::default();
        let (hs, _) = client("ws://h/", &[], Some(&config));
        let resp = response(
            &hs,
            101,
            &[(
                "Sec-WebSocket-Extensions",
                "permessage-deflate; bogus_param",
            )],
        );
        let err = hs.validate_response(&resp).unwrap_err();
        assert!(matches!(err, HandshakeError::Extension(_)), "{err:?}");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_responses_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let config = DeflateConfig::default();
            let (hs, _) = client("ws://h/", &["a"], Some(&config));
            let mut wire = b"HTTP/1.1 101 OK\r\n".to_vec();
            wire.extend_from_slice(&bytes);
            for buf in [&bytes[..], &wire[..]] {
                if let Ok(Some((resp, len))) = hs.parse_response(buf, 256) {
                    proptest::prop_assert!(len <= buf.len().min(256));
                    let _ = hs.validate_response(&resp);
                }
            }
        }
    }
}
