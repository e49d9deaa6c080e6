//! Byte-level parsing of HTTP/1.x heads with `httparse`, into `http` types.
//!
//! Both functions look at no more than `max_header_size` bytes and at most
//! [`MAX_HEADERS`] header lines, so the work and memory spent on a head are
//! bounded whatever the peer sends.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::HandshakeError;

/// The most header lines a head may carry.
pub const MAX_HEADERS: usize = 64;

/// Parses an HTTP/1.1 request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and more bytes are needed,
/// or the request and the length of its head in bytes (what follows belongs
/// to the WebSocket stream). A head longer than `max_header_size` fails with
/// [`HandshakeError::HeadersTooLarge`] as soon as `buf` holds more than that
/// many bytes without the head having ended; more than [`MAX_HEADERS`] lines
/// fail with [`HandshakeError::TooManyHeaders`].
pub fn parse_request(
    buf: &[u8],
    max_header_size: usize,
) -> Result<Option<(Request<()>, usize)>, HandshakeError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let Some(len) = run(
        parsed.parse(bounded(buf, max_header_size)),
        buf,
        max_header_size,
    )?
    else {
        return Ok(None);
    };
    // A complete parse fills every field; the fallbacks are never taken.
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| HandshakeError::Malformed("invalid method".into()))?;
    let uri = Uri::try_from(parsed.path.unwrap_or_default())
        .map_err(|e| HandshakeError::Malformed(format!("invalid request target: {e}")))?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version(parsed.version);
    *request.headers_mut() = header_map(parsed.headers)?;
    Ok(Some((request, len)))
}

/// Parses an HTTP/1.x response head; the same rules as [`parse_request`].
pub(super) fn parse_response(
    buf: &[u8],
    max_header_size: usize,
) -> Result<Option<(Response<()>, usize)>, HandshakeError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let Some(len) = run(
        parsed.parse(bounded(buf, max_header_size)),
        buf,
        max_header_size,
    )?
    else {
        return Ok(None);
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or_default())
        .map_err(|_| HandshakeError::Malformed("invalid status code".into()))?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version(parsed.version);
    *response.headers_mut() = header_map(parsed.headers)?;
    Ok(Some((response, len)))
}

/// The part of `buf` the parser may look at.
fn bounded(buf: &[u8], max_header_size: usize) -> &[u8] {
    &buf[..buf.len().min(max_header_size)]
}

/// Interprets an `httparse` outcome: the head's length, `None` for "need
/// more", or the error.
fn run(
    status: httparse::Result<usize>,
    buf: &[u8],
    max_header_size: usize,
) -> Result<Option<usize>, HandshakeError> {
    match status {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buf.len() > max_header_size => {
            Err(HandshakeError::HeadersTooLarge {
                limit: max_header_size,
            })
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HandshakeError::TooManyHeaders),
        Err(e) => Err(HandshakeError::Malformed(e.to_string())),
    }
}

fn version(minor: Option<u8>) -> Version {
    match minor {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    }
}

fn header_map(headers: &[httparse::Header<'_>]) -> Result<HeaderMap, HandshakeError> {
    // At most MAX_HEADERS entries: httparse stopped at the slot count.
    let mut map = HeaderMap::with_capacity(headers.len());
    for header in headers {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
            HandshakeError::Malformed(format!("invalid header name {:?}", header.name))
        })?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| {
            HandshakeError::Malformed(format!("invalid value in header {}", header.name))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head length of an outcome (the `http` types have no `PartialEq`).
    fn len<T>(
        r: Result<Option<(T, usize)>, HandshakeError>,
    ) -> Result<Option<usize>, HandshakeError> {
        r.map(|o| o.map(|(_, n)| n))
    }

    const REQUEST: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn parses_a_request_and_reports_its_length() {
        let mut buf = REQUEST.to_vec();
        buf.extend_from_slice(b"\x81\x00frames follow");
        let (req, len) = parse_request(&buf, 16384).unwrap().unwrap();
        assert_eq!(len, REQUEST.len());
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/chat?room=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(
            req.headers()["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        assert_eq!(req.headers().len(), 7);
    }

    #[test]
    fn every_cut_of_a_request_is_incomplete() {
        for cut in 0..REQUEST.len() {
            assert_eq!(
                len(parse_request(&REQUEST[..cut], 16384)),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert!(parse_request(REQUEST, 16384).unwrap().is_some());
    }

    #[test]
    fn every_cut_of_a_response_is_incomplete() {
        let response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        for cut in 0..response.len() {
            assert_eq!(
                len(parse_response(&response[..cut], 16384)),
                Ok(None),
                "cut at {cut}"
            );
        }
        let (resp, len) = parse_response(response, 16384).unwrap().unwrap();
        assert_eq!(len, response.len());
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    }

    #[test]
    fn head_exactly_at_the_limit_is_accepted() {
        assert!(parse_request(REQUEST, REQUEST.len()).unwrap().is_some());
        assert_eq!(
            len(parse_request(REQUEST, REQUEST.len() - 1)),
            Err(HandshakeError::HeadersTooLarge {
                limit: REQUEST.len() - 1
            })
        );
    }

    #[test]
    fn endless_header_is_too_large() {
        let mut buf = b"GET / HTTP/1.1\r\nX-Endless: ".to_vec();
        let limit = 16384;
        while buf.len() <= limit {
            assert_eq!(len(parse_request(&buf, limit)), Ok(None));
            buf.extend_from_slice(&[b'a'; 1000]);
        }
        let err = parse_request(&buf, limit).unwrap_err();
        assert_eq!(err, HandshakeError::HeadersTooLarge { limit });
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(err.to_string(), "headers exceed 16384 bytes");
    }

    #[test]
    fn too_many_headers() {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            buf.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        let err = parse_request(&buf, 16384).unwrap_err();
        assert_eq!(err, HandshakeError::TooManyHeaders);
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn exactly_max_headers_is_fine() {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            buf.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        let (req, _) = parse_request(&buf, 16384).unwrap().unwrap();
        assert_eq!(req.headers().len(), MAX_HEADERS);
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            &b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"[..],
            b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
        ] {
            let err = parse_request(bad, 16384).unwrap_err();
            assert!(
                matches!(err, HandshakeError::Malformed(_)),
                "{bad:?}: {err:?}"
            );
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn http_10_is_parsed_as_such() {
        let (req, _) = parse_request(b"GET / HTTP/1.0\r\n\r\n", 100)
            .unwrap()
            .unwrap();
        assert_eq!(req.version(), Version::HTTP_10);
    }

    #[test]
    fn zero_limit_never_panics() {
        assert_eq!(len(parse_request(b"", 0)), Ok(None));
        assert!(parse_request(b"G", 0).is_err());
    }
}
