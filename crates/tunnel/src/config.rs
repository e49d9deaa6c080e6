//! `sockeye.toml`: several tunnels started at once by `sockeye start`.
//!
//! ```toml
//! server = "https://tunnel.example.com"
//! token = "s3cret"
//! inspect = "127.0.0.1:4040"   # or "off"
//! proxy = "http://proxy.corp:3128"  # optional: HTTP CONNECT or socks5://
//!
//! [tunnels.ws-app]
//! port = 8080                  # or local = "localhost:8080"
//! auth = "user:pass"
//! capture_frames = true
//!
//! [tunnels.api]
//! local = "127.0.0.1:9000"
//! subdomain = "api-staging"    # default: the table's name
//! host_header = "rewrite"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::{AgentConfig, Error, TunnelConfig};

/// The contents of a `sockeye.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The tunnel server's URL.
    pub server: String,
    /// The agent's token.
    pub token: Option<String>,
    /// The inspector's address, or `"off"`. Default `127.0.0.1:4040`.
    pub inspect: Option<String>,
    /// Reach the server through this proxy (`http://…` or `socks5://…`).
    pub proxy: Option<String>,
    /// The tunnels by name.
    #[serde(default)]
    pub tunnels: BTreeMap<String, FileTunnel>,
}

/// One `[tunnels.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTunnel {
    /// The local port (same as `local = "127.0.0.1:PORT"`).
    pub port: Option<u16>,
    /// The local server: `host:port` or `http://host:port`.
    pub local: Option<String>,
    /// The subdomain; default the table's name.
    pub subdomain: Option<String>,
    /// `user:pass` for basic auth at the public side.
    pub auth: Option<String>,
    /// `rewrite`, or the `Host` to send to the local server.
    pub host_header: Option<String>,
    /// Keep a message timeline per WebSocket in the inspector.
    #[serde(default)]
    pub capture_frames: bool,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<FileConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        FileConfig::parse(&text).map_err(|e| match e {
            Error::ConfigFile { reason, .. } => Error::ConfigFile {
                path: path.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// Parses the text of a `sockeye.toml`.
    pub fn parse(text: &str) -> Result<FileConfig, Error> {
        toml::from_str(text).map_err(|e| Error::ConfigFile {
            path: "sockeye.toml".into(),
            reason: e.to_string(),
        })
    }

    /// The agent for the tunnels named (all of them when `names` is empty).
    pub fn agent(&self, names: &[String]) -> Result<AgentConfig, Error> {
        let mut config = AgentConfig::new(&self.server);
        config.token = self.token.clone();
        config.inspect = match self.inspect.as_deref() {
            None => config.inspect,
            Some("off") => None,
            Some(addr) => Some(addr.parse::<SocketAddr>().map_err(|_| {
                Error::Config(format!(
                    "inspect = {addr:?}: expected host:port such as 127.0.0.1:4040, or \"off\""
                ))
            })?),
        };
        if let Some(proxy) = &self.proxy {
            config.proxy = Some(
                sockeye::ProxyConfig::parse(proxy)
                    .map_err(|e| Error::Config(format!("proxy = {proxy:?}: {e}")))?,
            );
        }
        for name in names {
            if !self.tunnels.contains_key(name) {
                let known: Vec<&str> = self.tunnels.keys().map(String::as_str).collect();
                return Err(Error::Config(format!(
                    "no tunnel named {name:?} in the config file (it has: {})",
                    known.join(", ")
                )));
            }
        }
        for (name, tunnel) in &self.tunnels {
            if !names.is_empty() && !names.contains(name) {
                continue;
            }
            let local = match (&tunnel.local, tunnel.port) {
                (Some(local), None) => local.clone(),
                (None, Some(port)) => port.to_string(),
                _ => {
                    return Err(Error::Config(format!(
                        "tunnel {name:?}: give exactly one of port = PORT or local = \"host:port\""
                    )))
                }
            };
            config.tunnels.push(TunnelConfig {
                subdomain: Some(tunnel.subdomain.clone().unwrap_or_else(|| name.clone())),
                local,
                auth: tunnel.auth.clone(),
                host_header: tunnel.host_header.clone(),
                capture_frames: tunnel.capture_frames,
            });
        }
        if config.tunnels.is_empty() {
            return Err(Error::Config(
                "the config file has no [tunnels.NAME]".into(),
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
server = "https://tunnel.example.com"
token = "s3cret"
inspect = "off"

[tunnels.ws-app]
port = 8080
auth = "user:pass"
capture_frames = true

[tunnels.api]
local = "127.0.0.1:9000"
subdomain = "api-staging"
host_header = "rewrite"
"#;

    #[test]
    fn all_tunnels_or_the_named_ones() {
        let file = FileConfig::parse(EXAMPLE).unwrap();
        let all = file.agent(&[]).unwrap();
        assert_eq!(all.inspect, None);
        assert_eq!(all.tunnels.len(), 2);
        let api = &all.tunnels[0];
        assert_eq!(api.subdomain.as_deref(), Some("api-staging"));
        assert_eq!(api.host_header.as_deref(), Some("rewrite"));
        let one = file.agent(&["ws-app".into()]).unwrap();
        assert_eq!(one.tunnels.len(), 1);
        assert_eq!(one.tunnels[0].local, "8080");
        assert!(one.tunnels[0].capture_frames);
        let err = file.agent(&["nope".into()]).unwrap_err().to_string();
        assert!(
            err.contains("no tunnel named \"nope\"") && err.contains("api, ws-app"),
            "{err}"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = FileConfig::parse("server = 1").unwrap_err().to_string();
        assert!(err.contains("server"), "{err}");
        let err = FileConfig::parse("server = \"http://x\"\n[tunnels.a]\nprot = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
        let file = FileConfig::parse("server = \"http://x\"\n[tunnels.a]\n").unwrap();
        assert!(file
            .agent(&[])
            .unwrap_err()
            .to_string()
            .contains("exactly one of port"));
    }
}
