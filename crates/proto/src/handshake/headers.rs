//! Header helpers shared by both roles: comma-separated token lists and the
//! serialisation of header lines.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Header names RFC 6455 adds, spelled as the RFC spells them.
pub(super) const SEC_WEBSOCKET_KEY: &str = "Sec-WebSocket-Key";
pub(super) const SEC_WEBSOCKET_ACCEPT: &str = "Sec-WebSocket-Accept";
pub(super) const SEC_WEBSOCKET_VERSION: &str = "Sec-WebSocket-Version";
pub(super) const SEC_WEBSOCKET_PROTOCOL: &str = "Sec-WebSocket-Protocol";
pub(super) const SEC_WEBSOCKET_EXTENSIONS: &str = "Sec-WebSocket-Extensions";

/// The elements of a comma-separated list across every line of header
/// `name`, trimmed of optional whitespace, empty elements dropped.
pub(super) fn list_elements<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// Whether any line of header `name` lists `token` (ASCII case-insensitive).
pub(super) fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    list_elements(headers, name).any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
}

/// `bytes` without leading and trailing spaces and tabs.
pub(super) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Whether `s` is a non-empty HTTP token (RFC 9110 section 5.6.2), the
/// grammar of subprotocol names.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A value for display in an error message: lossy UTF-8, at most 64 chars.
pub(super) fn display_value(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(64).collect()
}

/// Appends `Name: value\r\n`, the name in its conventional capitalisation
/// (header names are case-insensitive, but some peers are not).
pub(super) fn write_header(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    write_name(out, name.as_str());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_name(out: &mut Vec<u8>, lower: &str) {
    const KNOWN: [&str; 5] = [
        SEC_WEBSOCKET_KEY,
        SEC_WEBSOCKET_ACCEPT,
        SEC_WEBSOCKET_VERSION,
        SEC_WEBSOCKET_PROTOCOL,
        SEC_WEBSOCKET_EXTENSIONS,
    ];
    if let Some(known) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(lower)) {
        out.extend_from_slice(known.as_bytes());
        return;
    }
    // Title-Case each dash-separated word: "content-type" -> "Content-Type".
    let mut upper_next = true;
    for b in lower.bytes() {
        out.push(if upper_next {
            b.to_ascii_uppercase()
        } else {
            b
        });
        upper_next = b == b'-';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn tokens_across_lines_and_case() {
        let headers = map(&[("connection", "keep-alive"), ("connection", " , UPGRADE\t")]);
        assert!(has_token(&headers, "connection", "upgrade"));
        assert!(has_token(&headers, "connection", "Keep-Alive"));
        assert!(!has_token(&headers, "connection", "close"));
        let elements: Vec<_> = list_elements(&headers, "connection").collect();
        assert_eq!(elements, [&b"keep-alive"[..], b"UPGRADE"]);
    }

    #[test]
    fn token_must_match_whole_element() {
        let headers = map(&[("upgrade", "websocketx, web socket")]);
        assert!(!has_token(&headers, "upgrade", "websocket"));
    }

    #[test]
    fn trims_only_ows() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
    }

    #[test]
    fn names_are_capitalised() {
        let mut out = Vec::new();
        write_header(
            &mut out,
            &HeaderName::from_static("sec-websocket-accept"),
            &HeaderValue::from_static("x"),
        );
        write_header(
            &mut out,
            &HeaderName::from_static("content-type"),
            &HeaderValue::from_static("text/plain"),
        );
        assert_eq!(
            out,
            b"Sec-WebSocket-Accept: x\r\nContent-Type: text/plain\r\n"
        );
    }

    #[test]
    fn tokens() {
        assert!(is_token("chat.v2+json"));
        assert!(!is_token(""));
        assert!(!is_token("a,b"));
        assert!(!is_token("a b"));
        assert!(!is_token("é"));
    }
}
