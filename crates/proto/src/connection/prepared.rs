//! A message framed once and sent on many server connections: the bytes are
//! shared, never copied per connection.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

use super::{Connection, Role, State};
use crate::error::Error;
use crate::frame::{FrameHeader, OpCode, Utf8Bytes};

/// A text or binary message, framed for the server role.
///
/// Publishing to N subscribers frames the message once; each connection
/// queues a reference to the same bytes. Connections that negotiated
/// permessage-deflate without server context takeover (and the same window
/// and level) share one compressed frame, made by the first of them.
/// Connections with context takeover must compress for themselves, and
/// client connections must mask for themselves: both fall back to a
/// per-connection frame.
#[derive(Debug)]
pub struct PreparedMessage {
    opcode: OpCode,
    payload: Bytes,
    frame: Bytes,
    deflated: Mutex<Vec<((u8, u32), Bytes)>>,
}

impl PreparedMessage {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::new(OpCode::Text, text.into().into_bytes())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::new(OpCode::Binary, data.into())
    }

    fn new(opcode: OpCode, payload: Bytes) -> Self {
        let header = FrameHeader::new(opcode, payload.len() as u64);
        let mut frame = BytesMut::with_capacity(header.encoded_len() + payload.len());
        header.encode(&mut frame);
        frame.extend_from_slice(&payload);
        PreparedMessage {
            opcode,
            payload,
            frame: frame.freeze(),
            deflated: Mutex::new(Vec::new()),
        }
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.opcode == OpCode::Text
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// The unmasked, uncompressed frame.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    fn cached(&self, key: (u8, u32)) -> Option<Bytes> {
        let cache = self.deflated.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, b)| b.clone())
    }

    fn remember(&self, key: (u8, u32), frame: Bytes) {
        let mut cache = self.deflated.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.iter().any(|(k, _)| *k == key) {
            cache.push((key, frame));
        }
    }
}

impl Connection {
    /// Queues a prepared message, sharing its bytes where the role and the
    /// negotiated compression allow (see [`PreparedMessage`]).
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::Closed);
        }
        if self.sending_fragmented {
            return Err(Error::Misuse("a fragmented message is being sent"));
        }
        if self.role == Role::Client {
            return self.send_data(message.opcode, message.payload.clone());
        }
        if let Some(compression) = self.deflate.as_mut() {
            let deflate = &mut compression.deflate;
            if deflate.should_compress(message.len()) {
                let Some(key) = deflate.stateless_key() else {
                    return self.send_data(message.opcode, message.payload.clone());
                };
                let frame = match message.cached(key) {
                    Some(frame) => frame,
                    None => {
                        let mut body = BytesMut::new();
                        deflate.compress(&message.payload, &mut body)?;
                        if body.len() >= message.len() {
                            // Incompressible: every such connection gets the plain frame.
                            message.remember(key, message.frame.clone());
                            self.queue_framed(message.frame.clone());
                            return Ok(());
                        }
                        let mut header = FrameHeader::new(message.opcode, body.len() as u64);
                        header.rsv1 = true;
                        let mut frame = BytesMut::with_capacity(header.encoded_len() + body.len());
                        header.encode(&mut frame);
                        frame.extend_from_slice(&body);
                        let frame = frame.freeze();
                        message.remember(key, frame.clone());
                        frame
                    }
                };
                self.queue_framed(frame);
                return Ok(());
            }
        }
        self.queue_framed(message.frame.clone());
        Ok(())
    }

    /// Queues complete frame bytes: copied into the coalescing buffer when
    /// small, shared when large.
    fn queue_framed(&mut self, frame: Bytes) {
        if frame.len() < self.config.zero_copy_threshold {
            self.transmit.tail_mut().extend_from_slice(&frame);
            self.transmit.added(frame.len());
        } else {
            self.transmit.push_bytes(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extension::{DeflateConfig, PerMessageDeflate};
    use crate::{Config, Message};

    fn deliver(from: &mut Connection, to: &mut Connection) -> Vec<Message> {
        let bytes = from.take_transmit();
        to.receive(&bytes);
        std::iter::from_fn(|| to.poll_message())
            .map(Result::unwrap)
            .collect()
    }

    fn deflate_pair(no_context_takeover: bool) -> (Connection, Connection) {
        let config = DeflateConfig {
            server_no_context_takeover: no_context_takeover,
            threshold: 0,
            ..DeflateConfig::default()
        };
        let offer = config.offer();
        let (params, answer) = config.negotiate_server(&[&offer]).unwrap().unwrap();
        let client_params = config.negotiate_client(&answer).unwrap();
        let server = Connection::new(Role::Server, Config::default())
            .with_deflate(PerMessageDeflate::new(Role::Server, &params, &config));
        let client = Connection::new(Role::Client, Config::default()).with_deflate(
            PerMessageDeflate::new(Role::Client, &client_params, &config),
        );
        (server, client)
    }

    #[test]
    fn plain_connections_share_one_frame() {
        let message = PreparedMessage::text("hello everyone");
        for _ in 0..3 {
            let mut server = Connection::new(Role::Server, Config::default());
            let mut client = Connection::new(Role::Client, Config::default());
            server.send_prepared(&message).unwrap();
            assert_eq!(
                deliver(&mut server, &mut client),
                vec![Message::text("hello everyone")]
            );
        }
    }

    #[test]
    fn stateless_deflate_compresses_once_for_all() {
        let payload = "compress me once ".repeat(50);
        let message = PreparedMessage::text(payload.as_str());
        let mut frames = Vec::new();
        for _ in 0..3 {
            let (mut server, mut client) = deflate_pair(true);
            server.send_prepared(&message).unwrap();
            let wire = server.take_transmit();
            assert!(wire.len() < payload.len(), "compressed");
            frames.push(wire.clone());
            client.receive(&wire);
            assert_eq!(
                client.poll_message(),
                Some(Ok(Message::text(payload.as_str())))
            );
        }
        assert!(frames.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(message.deflated.lock().unwrap().len(), 1);
    }

    #[test]
    fn context_takeover_compresses_per_connection() {
        let message = PreparedMessage::binary(vec![42u8; 5000]);
        let (mut server, mut client) = deflate_pair(false);
        for _ in 0..2 {
            server.send_prepared(&message).unwrap();
            assert_eq!(
                deliver(&mut server, &mut client),
                vec![Message::binary(vec![42u8; 5000])]
            );
        }
        assert!(message.deflated.lock().unwrap().is_empty());
    }

    #[test]
    fn incompressible_message_between_compressed_ones_keeps_context_in_step() {
        // With context takeover, a message sent uncompressed must leave the
        // compressor as if it never saw it, or the next one refers to data
        // the peer does not have.
        let (mut server, mut client) = deflate_pair(false);
        let mut noise = Vec::with_capacity(4096);
        let mut x: u32 = 12345;
        for _ in 0..4096 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            noise.push((x >> 16) as u8);
        }
        let text = "the same words again and again ".repeat(40);
        for payload in [
            text.as_bytes().to_vec(),
            noise.clone(),
            text.as_bytes().to_vec(),
            noise,
            text.as_bytes().to_vec(),
        ] {
            server.send_binary(payload.clone()).unwrap();
            let wire = server.take_transmit();
            assert!(
                wire.len() <= payload.len() + 4,
                "never sent larger than plain"
            );
            client.receive(&wire);
            assert_eq!(client.poll_message(), Some(Ok(Message::binary(payload))));
        }
    }
}
