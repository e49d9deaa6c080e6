//! WebSocket extensions. The one we speak is permessage-deflate (RFC 7692).

pub mod permessage_deflate;

pub use permessage_deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
