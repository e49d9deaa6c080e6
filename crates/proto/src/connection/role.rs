//! Which end of the connection we are.

/// Client or server: decides masking and which frames are legal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Masks every frame it sends; refuses masked frames.
    Client,
    /// Sends frames unmasked; refuses unmasked frames.
    Server,
}
