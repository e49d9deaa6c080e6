//! The control protocol: what the agent and the server say before the
//! multiplexer starts, as plain types and a JSON codec.
//!
//! ```text
//!   agent ── GET /_sockeye/tunnel (WebSocket upgrade) ──────────────► server
//!   agent ── text: Hello {version, token, session, tunnels[]} ──────► server
//!   agent ◄─ text: Welcome {tunnels[{name, url}]} ─────────────────── server
//!          or text: Refused {reason, retry} then close 1008
//!   both  ══ binary messages: yamux frames, both ways ══
//!   server opens one yamux stream per public connection; its first bytes
//!   are a preamble (tunnel name, client address), then HTTP/1.1 as the
//!   client sent it.
//! ```

use serde::{Deserialize, Serialize};

/// The path of the control WebSocket on the server.
pub const CONTROL_PATH: &str = "/_sockeye/tunnel";

/// The version of this protocol an agent speaks.
pub const VERSION: u32 = 1;

/// The largest control message accepted before the multiplexer starts.
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;

/// The agent's first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`VERSION`].
    pub version: u32,
    /// The token the server's operator gave out (`--token`).
    pub token: Option<String>,
    /// A random secret of this agent process: a reconnecting agent that
    /// presents the same token and session takes over its old subdomains
    /// at once, even before the server noticed the old link died.
    pub session: String,
    /// The tunnels to open.
    pub tunnels: Vec<TunnelRequest>,
}

/// One tunnel an agent asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRequest {
    /// The subdomain wanted; `None` lets the server pick a random one.
    pub name: Option<String>,
    /// `user:pass`: the server answers 401 to requests without these
    /// credentials (HTTP basic auth) before they reach the agent.
    pub auth: Option<String>,
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Accepted: the multiplexer starts with the next binary message.
    Welcome {
        /// The tunnels granted, in the order asked.
        tunnels: Vec<Granted>,
    },
    /// Refused; the server closes the WebSocket with 1008 next.
    Refused {
        /// Why, in words for the user.
        reason: String,
        /// Whether trying again later may succeed.
        retry: bool,
    },
}

/// A tunnel the server granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// The subdomain.
    pub name: String,
    /// Where the public reaches it: `https://ws-app.tunnel.example.com`.
    pub url: String,
}

/// The preamble of a stream: which tunnel, and the client's address.
pub(crate) fn encode_preamble(name: &str, client: &str) -> Vec<u8> {
    let name = &name.as_bytes()[..name.len().min(255)];
    let client = &client.as_bytes()[..client.len().min(255)];
    let mut out = Vec::with_capacity(2 + name.len() + client.len());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.push(client.len() as u8);
    out.extend_from_slice(client);
    out
}

/// Checks a subdomain: one DNS label, lower case letters, digits and
/// hyphens, 1 to 63 long, no hyphen at either end.
pub fn check_subdomain(name: &str) -> Result<(), crate::Error> {
    let bad = |reason| crate::Error::Subdomain {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("it must be 1 to 63 characters long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad("only lower case letters, digits and '-' are allowed"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("it cannot start or end with '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_as_json() {
        let hello = Hello {
            version: VERSION,
            token: Some("t".into()),
            session: "s".into(),
            tunnels: vec![TunnelRequest {
                name: Some("ws-app".into()),
                auth: None,
            }],
        };
        let text = serde_json::to_string(&hello).unwrap();
        assert_eq!(serde_json::from_str::<Hello>(&text).unwrap(), hello);
        let refused = ServerMessage::Refused {
            reason: "no".into(),
            retry: false,
        };
        let text = serde_json::to_string(&refused).unwrap();
        assert!(text.contains("\"type\":\"refused\""), "{text}");
    }

    #[test]
    fn subdomains_are_dns_labels() {
        assert!(check_subdomain("ws-app").is_ok());
        assert!(check_subdomain("a1").is_ok());
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"x".repeat(64)] {
            assert!(check_subdomain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn preamble_layout() {
        assert_eq!(encode_preamble("ab", "c"), b"\x02ab\x01c");
    }
}
