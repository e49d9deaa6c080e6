//! Negotiating permessage-deflate: the client's offer, the server's choice
//! and the client's check of the answer (RFC 7692 section 7.1).
//!
//! `Sec-WebSocket-Extensions` is parsed per RFC 6455 section 9.1: a comma
//! list of `token *( ";" token [ "=" ( token / quoted-string ) ] )`, where a
//! quoted value must unquote to a token. Window-bits values are `8` to `15`,
//! decimal, no leading zero (RFC 7692 7.1.2).

use super::{clamp_bits, DeflateConfig, DeflateParams, EXTENSION_NAME, MAX_WINDOW_BITS};
use crate::error::Error;

/// The four parameters as they appear on the wire, in an offer or an answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct WireParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (only legal in an offer).
    client_max_window_bits: Option<Option<u8>>,
}

impl WireParams {
    /// Reads the parameters of one `permessage-deflate` element; duplicates,
    /// unknown names and bad values are errors.
    fn parse(params: &[(&str, Option<String>)]) -> Result<WireParams, String> {
        let mut wire = WireParams::default();
        let mut seen = [false; 4];
        for (name, value) in params {
            let index = match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                _ => return Err(format!("unknown parameter {name:?}")),
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(format!("duplicate parameter {name}"));
            }
            match (index, value.as_deref()) {
                (0 | 1, Some(v)) => return Err(format!("{name} takes no value, got {v:?}")),
                (0, None) => wire.server_no_context_takeover = true,
                (1, None) => wire.client_no_context_takeover = true,
                (2, None) => return Err(format!("{name} needs a value")),
                (2, Some(v)) => wire.server_max_window_bits = Some(window_bits(name, v)?),
                (_, v) => {
                    wire.client_max_window_bits = Some(v.map(|v| window_bits(name, v)).transpose()?)
                }
            }
        }
        Ok(wire)
    }

    /// Renders `permessage-deflate` with these parameters.
    fn render(&self) -> String {
        let mut s = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={bits}"));
        }
        match self.client_max_window_bits {
            Some(Some(bits)) => s.push_str(&format!("; client_max_window_bits={bits}")),
            Some(None) => s.push_str("; client_max_window_bits"),
            None => {}
        }
        s
    }
}

/// `8..=15`, decimal, no sign, no leading zero.
fn window_bits(name: &str, value: &str) -> Result<u8, String> {
    match value.parse::<u8>() {
        Ok(bits @ 8..=15)
            if value.bytes().all(|b| b.is_ascii_digit()) && !value.starts_with('0') =>
        {
            Ok(bits)
        }
        _ => Err(format!("{name} must be 8 to 15, got {value:?}")),
    }
}

impl DeflateConfig {
    /// The parameters our offer carries.
    fn offer_params(&self) -> WireParams {
        let client_bits = clamp_bits(self.client_max_window_bits);
        let server_bits = clamp_bits(self.server_max_window_bits);
        WireParams {
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
            server_max_window_bits: (server_bits < MAX_WINDOW_BITS).then_some(server_bits),
            // Always present: we can compress with any window the server asks for.
            client_max_window_bits: Some((client_bits < MAX_WINDOW_BITS).then_some(client_bits)),
        }
    }

    /// The client's `Sec-WebSocket-Extensions` value, e.g.
    /// `permessage-deflate; client_max_window_bits` for the default config.
    ///
    /// `client_max_window_bits` is always offered (with our window as its
    /// value when below 15), so the server may ask us for a smaller window.
    pub fn offer(&self) -> String {
        self.offer_params().render()
    }

    /// Server side: `offers` are the raw `Sec-WebSocket-Extensions` header
    /// values of the request (each may hold several comma-separated
    /// extensions with `;`-parameters, quoted-string values allowed).
    ///
    /// Picks the first acceptable permessage-deflate offer (RFC 7692 7.1: an
    /// offer whose parameters we cannot honour is declined and the next one
    /// tried) and returns the agreed parameters and the response header
    /// value; `Ok(None)` when none is acceptable or none was offered. Offers
    /// with unknown or duplicate parameters, bad values or broken syntax are
    /// declined too: a client's bad offer costs it compression, not the
    /// connection. Never fails today; the `Result` leaves room for policy.
    pub fn negotiate_server(
        &self,
        offers: &[&str],
    ) -> Result<Option<(DeflateParams, String)>, Error> {
        let chosen = offers
            .iter()
            .filter_map(|header| split_quoted(header, b','))
            .flatten()
            .filter_map(parse_element)
            .filter(|(name, _)| name.eq_ignore_ascii_case(EXTENSION_NAME))
            .filter_map(|(_, params)| WireParams::parse(&params).ok())
            .find_map(|offer| self.accept(&offer));
        Ok(chosen)
    }

    /// The answer to one well-formed offer, or `None` to decline it.
    fn accept(&self, offer: &WireParams) -> Option<(DeflateParams, String)> {
        let server_bits = clamp_bits(self.server_max_window_bits)
            .min(offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS));
        let our_client_bits = clamp_bits(self.client_max_window_bits);
        let client_bits = match offer.client_max_window_bits {
            // The client cannot be limited; only fine if we need no limit.
            None if our_client_bits < MAX_WINDOW_BITS => return None,
            None => MAX_WINDOW_BITS,
            Some(offered) => our_client_bits.min(offered.unwrap_or(MAX_WINDOW_BITS)),
        };
        let params = DeflateParams {
            server_no_context_takeover: self.server_no_context_takeover
                || offer.server_no_context_takeover,
            // In an offer this is the client's promise (RFC 7692 7.1.1.2);
            // echoing it lets us drop the decompressor between messages.
            client_no_context_takeover: self.client_no_context_takeover
                || offer.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        };
        let answer = WireParams {
            server_no_context_takeover: params.server_no_context_takeover,
            client_no_context_takeover: params.client_no_context_takeover,
            // Must be echoed (same or smaller) when the offer carried it.
            server_max_window_bits: (offer.server_max_window_bits.is_some()
                || server_bits < MAX_WINDOW_BITS)
                .then_some(server_bits),
            client_max_window_bits: (client_bits < MAX_WINDOW_BITS).then_some(Some(client_bits)),
        };
        Some((params, answer.render()))
    }

    /// Client side: checks the server's `Sec-WebSocket-Extensions` value
    /// against what [`offer`](Self::offer) sent (RFC 7692 7.1.1-7.1.2) and
    /// returns the agreed parameters.
    ///
    /// Fails with [`Error::Compression`] (the client must then fail the
    /// connection) on anything but exactly one well-formed
    /// `permessage-deflate`: unknown or duplicate parameters, a window-bits
    /// value we did not allow, `client_max_window_bits` without a value or
    /// not offered, or a server that ignored a requested
    /// `server_no_context_takeover` / `server_max_window_bits`.
    pub fn negotiate_client(&self, response: &str) -> Result<DeflateParams, Error> {
        check_answer(&self.offer_params(), self, response).map_err(Error::Compression)
    }
}

/// The client's check of an answer against the offer it sent.
fn check_answer(
    offer: &WireParams,
    config: &DeflateConfig,
    response: &str,
) -> Result<DeflateParams, String> {
    let elements: Vec<&str> = split_quoted(response, b',')
        .ok_or("unterminated quoted string in the response")?
        .into_iter()
        .filter(|e| !e.trim_matches(OWS).is_empty())
        .collect();
    let [element] = elements[..] else {
        return Err(format!(
            "expected exactly one extension in the response, got {response:?}"
        ));
    };
    let (name, params) =
        parse_element(element).ok_or_else(|| format!("malformed response {response:?}"))?;
    if !name.eq_ignore_ascii_case(EXTENSION_NAME) {
        return Err(format!("the server chose {name:?}, which was not offered"));
    }
    let answer = WireParams::parse(&params)?;

    if offer.server_no_context_takeover && !answer.server_no_context_takeover {
        return Err("the server ignored our server_no_context_takeover".into());
    }
    let server_bits = match (offer.server_max_window_bits, answer.server_max_window_bits) {
        (Some(_), None) => return Err("the server ignored our server_max_window_bits".into()),
        (Some(max), Some(bits)) if bits > max => {
            return Err(format!(
                "server_max_window_bits={bits} is more than the {max} we offered"
            ))
        }
        (_, bits) => bits.unwrap_or(MAX_WINDOW_BITS),
    };
    let client_bits = match (offer.client_max_window_bits, answer.client_max_window_bits) {
        (_, None) => MAX_WINDOW_BITS,
        (None, Some(_)) => {
            return Err("client_max_window_bits in the response was not offered".into())
        }
        (Some(_), Some(None)) => {
            return Err("client_max_window_bits needs a value in a response".into())
        }
        (Some(Some(max)), Some(Some(bits))) if bits > max => {
            return Err(format!(
                "client_max_window_bits={bits} is more than the {max} we offered"
            ))
        }
        (Some(_), Some(Some(bits))) => bits,
    };
    Ok(DeflateParams {
        server_no_context_takeover: answer.server_no_context_takeover,
        client_no_context_takeover: config.client_no_context_takeover
            || answer.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits.min(clamp_bits(config.client_max_window_bits)),
    })
}

/// Optional whitespace (RFC 7230 OWS).
const OWS: &[char] = &[' ', '\t'];

/// Splits at `sep` outside quoted strings; `None` if a quote is unterminated.
fn split_quoted(s: &str, sep: u8) -> Option<Vec<&str>> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    (!quoted).then_some(parts)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An extension name and its parameters (values unquoted).
type Element<'a> = (&'a str, Vec<(&'a str, Option<String>)>);

/// Parses `name *( ";" param [ "=" value ] )`, unquoting quoted values;
/// `None` when it is not that shape (empty list elements included).
fn parse_element(element: &str) -> Option<Element<'_>> {
    let mut parts = split_quoted(element, b';')?.into_iter();
    let name = parts.next()?.trim_matches(OWS);
    if !is_token(name) {
        return None;
    }
    let mut params = Vec::new();
    for part in parts {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim_matches(OWS), Some(unquote(v.trim_matches(OWS))?)),
            None => (part.trim_matches(OWS), None),
        };
        if !is_token(key) {
            return None;
        }
        params.push((key, value));
    }
    Some((name, params))
}

/// A token as is, or a quoted-string unescaped; the result must be a token.
fn unquote(value: &str) -> Option<String> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            let (mut out, mut chars) = (String::new(), inner.chars());
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next()? } else { c });
            }
            out
        }
        None => value.to_owned(),
    };
    is_token(&inner).then_some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(config: &DeflateConfig, offers: &[&str]) -> Option<(DeflateParams, String)> {
        config
            .negotiate_server(offers)
            .expect("negotiate_server never fails")
    }

    fn params(snct: bool, cnct: bool, sbits: u8, cbits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: sbits,
            client_max_window_bits: cbits,
        }
    }

    #[test]
    fn offers() {
        let d = DeflateConfig::default();
        assert_eq!(d.offer(), "permessage-deflate; client_max_window_bits");
        let all = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 10,
            client_max_window_bits: 9,
            ..d.clone()
        };
        assert_eq!(
            all.offer(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=9"
        );
        let clamped = DeflateConfig {
            server_max_window_bits: 3,
            client_max_window_bits: 200,
            ..d
        };
        assert_eq!(
            clamped.offer(),
            "permessage-deflate; server_max_window_bits=8; client_max_window_bits"
        );
    }

    #[test]
    fn server_accepts_each_autobahn_13_offer() {
        let d = DeflateConfig::default();
        let base = "permessage-deflate; client_no_context_takeover; client_max_window_bits";
        let cases = [
            ("", params(false, true, 15, 15), "permessage-deflate; client_no_context_takeover"),
            ("; server_no_context_takeover", params(true, true, 15, 15), "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            ("; server_max_window_bits=9", params(false, true, 9, 15), "permessage-deflate; client_no_context_takeover; server_max_window_bits=9"),
            ("; server_max_window_bits=15", params(false, true, 15, 15), "permessage-deflate; client_no_context_takeover; server_max_window_bits=15"),
            ("; server_no_context_takeover; server_max_window_bits=9", params(true, true, 9, 15), "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"),
        ];
        for (extra, want, answer) in cases {
            let offer = format!("{base}{extra}");
            assert_eq!(
                server(&d, &[&offer]),
                Some((want, answer.to_owned())),
                "{offer}"
            );
        }
        // 13.7: three offers in one header; the first wins.
        let three = format!("{base}; server_no_context_takeover; server_max_window_bits=9, {base}; server_no_context_takeover, {base}");
        assert_eq!(server(&d, &[&three]).unwrap().0, params(true, true, 9, 15));
    }

    #[test]
    fn server_parameter_table() {
        let d = DeflateConfig::default();
        let ok = |offer: &str| server(&d, &[offer]).unwrap_or_else(|| panic!("declined {offer:?}"));
        assert_eq!(
            ok("permessage-deflate"),
            (params(false, false, 15, 15), "permessage-deflate".into())
        );
        assert_eq!(
            ok("Permessage-Deflate ;CLIENT_MAX_WINDOW_BITS").0,
            params(false, false, 15, 15)
        );
        assert_eq!(
            ok("permessage-deflate; client_max_window_bits=10").1,
            "permessage-deflate; client_max_window_bits=10"
        );
        assert_eq!(
            ok("permessage-deflate; server_max_window_bits=8").0,
            params(false, false, 8, 15)
        );
        assert_eq!(
            ok(r#"permessage-deflate; server_max_window_bits="10""#).0,
            params(false, false, 10, 15)
        );
        assert_eq!(
            ok("permessage-deflate;server_max_window_bits = 12 ").0,
            params(false, false, 12, 15)
        );
        for bad in [
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=abc",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=7",
            r#"permessage-deflate; client_max_window_bits="1 0""#,
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; x_unknown",
            "permessage-deflate;",
            "permessage-deflate; =10",
            r#"permessage-deflate; server_max_window_bits="10"#,
            "x-webkit-deflate-frame",
            "",
            ",,",
            "\u{fffd}; ;; \"",
        ] {
            assert_eq!(server(&d, &[bad]), None, "{bad:?} must be declined");
        }
    }

    #[test]
    fn server_falls_back_to_the_next_offer() {
        let d = DeflateConfig::default();
        let got = server(
            &d,
            &[
                "foo; a=\"x,y\", permessage-deflate; bogus",
                "permessage-deflate; server_max_window_bits=11",
            ],
        );
        assert_eq!(got.unwrap().0, params(false, false, 11, 15));
        assert_eq!(server(&d, &[]), None);
        assert_eq!(server(&d, &["x-foo, x-bar; y"]), None);
    }

    #[test]
    fn server_config_shapes_the_answer() {
        let small = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 10,
            client_max_window_bits: 11,
            ..DeflateConfig::default()
        };
        // A client that cannot be limited is declined; the next offer wins.
        let got = server(
            &small,
            &[
                "permessage-deflate",
                "permessage-deflate; client_max_window_bits=9; server_max_window_bits=12",
            ],
        );
        assert_eq!(
            got,
            Some((
                params(true, true, 10, 9),
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=9"
                    .into()
            ))
        );
        let smaller_server = server(
            &small,
            &["permessage-deflate; client_max_window_bits; server_max_window_bits=9"],
        );
        assert_eq!(smaller_server.unwrap().0, params(true, true, 9, 11));
    }

    #[test]
    fn client_accepts_autobahn_13_answers() {
        let d = DeflateConfig::default();
        for (answer, want) in [
            ("permessage-deflate", params(false, false, 15, 15)),
            (
                "permessage-deflate; client_no_context_takeover",
                params(false, true, 15, 15),
            ),
            (
                "permessage-deflate; client_max_window_bits=9",
                params(false, false, 15, 9),
            ),
            (
                "permessage-deflate; client_max_window_bits=15",
                params(false, false, 15, 15),
            ),
            (
                "permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
                params(false, true, 15, 9),
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=8",
                params(true, false, 8, 15),
            ),
            (
                "permessage-deflate; client_max_window_bits=8",
                params(false, false, 15, 8),
            ),
            (
                r#" permessage-deflate ; client_max_window_bits="10" "#,
                params(false, false, 15, 10),
            ),
        ] {
            assert_eq!(d.negotiate_client(answer), Ok(want), "{answer}");
        }
    }

    #[test]
    fn client_rejects_bad_answers() {
        let d = DeflateConfig::default();
        for bad in [
            "",
            "x-foo",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate, x-foo",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=abc",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover=yes",
            "permessage-deflate; unknown=1",
            "permessage-deflate; server_max_window_bits=\"9",
            "permessage-deflate;;",
        ] {
            assert!(
                matches!(d.negotiate_client(bad), Err(Error::Compression(_))),
                "{bad:?} must fail"
            );
        }
    }

    #[test]
    fn client_checks_what_it_asked_for() {
        let asked = DeflateConfig {
            server_no_context_takeover: true,
            server_max_window_bits: 10,
            client_max_window_bits: 12,
            ..DeflateConfig::default()
        };
        let fine = "permessage-deflate; server_no_context_takeover; server_max_window_bits=9";
        assert_eq!(asked.negotiate_client(fine), Ok(params(true, false, 9, 12)));
        for bad in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=13",
        ] {
            assert!(asked.negotiate_client(bad).is_err(), "{bad:?} must fail");
        }
        // A client_no_context_takeover we promised holds even if not echoed.
        let promise = DeflateConfig {
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        assert_eq!(
            promise.negotiate_client("permessage-deflate"),
            Ok(params(false, true, 15, 15))
        );
    }

    #[test]
    fn client_max_window_bits_not_offered_is_rejected() {
        let offer = WireParams::default();
        let answer = "permessage-deflate; client_max_window_bits=10";
        assert!(check_answer(&offer, &DeflateConfig::default(), answer).is_err());
        assert!(check_answer(&offer, &DeflateConfig::default(), "permessage-deflate").is_ok());
    }

    #[test]
    fn offer_and_answer_agree_with_each_other() {
        for sbits in 8..=15 {
            for cbits in 8..=15 {
                for (snct, cnct) in [(false, false), (true, false), (false, true), (true, true)] {
                    let client = DeflateConfig {
                        server_no_context_takeover: snct,
                        client_no_context_takeover: cnct,
                        server_max_window_bits: sbits,
                        client_max_window_bits: cbits,
                        ..DeflateConfig::default()
                    };
                    let server_config = DeflateConfig {
                        server_max_window_bits: 12,
                        ..DeflateConfig::default()
                    };
                    let (on_server, answer) =
                        server(&server_config, &[&client.offer()]).expect("accepted");
                    assert_eq!(
                        client.negotiate_client(&answer),
                        Ok(on_server),
                        "{} -> {answer}",
                        client.offer()
                    );
                }
            }
        }
    }
}
