//! The send path: messages into frames into the transmit queue.

use std::time::Instant;

use bytes::Bytes;

use super::{Connection, Message, Role, State};
use crate::error::Error;
use crate::frame::{apply_mask, CloseFrame, FrameHeader, OpCode, Utf8Bytes};

impl Connection {
    /// Queues a text message.
    pub fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), Error> {
        self.send_data(OpCode::Text, text.into().into_bytes())
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.send_data(OpCode::Binary, data.into())
    }

    /// Queues a ping; `data` is at most 125 bytes.
    pub fn send_ping(&mut self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.send_control(OpCode::Ping, data.into())
    }

    /// Queues an unsolicited pong (a heartbeat); `data` is at most 125 bytes.
    pub fn send_pong(&mut self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.send_control(OpCode::Pong, data.into())
    }

    /// Starts the close handshake (or does nothing if it already started).
    ///
    /// `now` starts the [close timeout](super::Config::close_timeout). The
    /// code must be one that may be sent ([`crate::CloseCode::is_sendable`]).
    pub fn send_close(&mut self, frame: Option<CloseFrame>, now: Instant) -> Result<(), Error> {
        if let Some(f) = &frame {
            if !f.code.is_sendable() {
                return Err(Error::Misuse("this close code may not be sent on the wire"));
            }
        }
        if self.state != State::Open {
            return Ok(());
        }
        self.write_close(frame.as_ref());
        self.state = State::CloseSent;
        self.close_deadline = Some(now + self.config.close_timeout);
        Ok(())
    }

    /// Queues any message. A [`Message::Close`] starts the close handshake,
    /// whose timeout runs from `now()`; only a close calls it (a clock read
    /// costs about as much as framing a small message).
    pub fn send_message(
        &mut self,
        message: Message,
        now: impl FnOnce() -> Instant,
    ) -> Result<(), Error> {
        match message {
            Message::Text(t) => self.send_text(t),
            Message::Binary(b) => self.send_binary(b),
            Message::Ping(b) => self.send_ping(b),
            Message::Pong(b) => self.send_pong(b),
            Message::Close(frame) => self.send_close(frame, now()),
        }
    }

    /// Queues one fragment of a message, for callers that stream large
    /// messages: `opcode` is Text or Binary on the first fragment and
    /// Continuation after; `fin` marks the last. Fragments are not compressed.
    pub fn send_fragment(&mut self, opcode: OpCode, data: Bytes, fin: bool) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::Closed);
        }
        match (opcode, self.sending_fragmented) {
            (OpCode::Continuation, false) => {
                return Err(Error::Misuse(
                    "continuation fragment without a first fragment",
                ))
            }
            (OpCode::Text | OpCode::Binary, true) => {
                return Err(Error::Misuse("new message before the fragmented one ended"))
            }
            (op, _) if op.is_control() => {
                return Err(Error::Misuse("control frames cannot be fragments"))
            }
            _ => {}
        }
        self.sending_fragmented = !fin;
        let mut header = FrameHeader::new(opcode, data.len() as u64);
        header.fin = fin;
        self.write_payload(header, data);
        Ok(())
    }

    pub(super) fn send_data(&mut self, opcode: OpCode, data: Bytes) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::Closed);
        }
        if self.sending_fragmented {
            return Err(Error::Misuse("a fragmented message is being sent"));
        }
        if let Some(compression) = self.deflate.as_mut() {
            if compression.deflate.should_compress(data.len()) {
                let mut out = std::mem::take(&mut compression.out);
                out.clear();
                compression.deflate.compress(&data, &mut out)?;
                // Incompressible data grows a little: send it as it is.
                if out.len() < data.len() {
                    let mut header = FrameHeader::new(opcode, out.len() as u64);
                    header.rsv1 = true;
                    self.write_frame(header, &out);
                    if let Some(compression) = self.deflate.as_mut() {
                        compression.out = out;
                    }
                    return Ok(());
                }
                compression.deflate.discard_last_compressed();
                compression.out = out;
            }
        }
        self.write_payload(FrameHeader::new(opcode, data.len() as u64), data);
        Ok(())
    }

    fn send_control(&mut self, opcode: OpCode, data: Bytes) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::Closed);
        }
        if data.len() > 125 {
            return Err(Error::Misuse(
                "control frame payloads are at most 125 bytes",
            ));
        }
        self.write_frame(FrameHeader::new(opcode, data.len() as u64), &data);
        Ok(())
    }

    /// Frames shared bytes: queued without a copy when large and unmasked.
    fn write_payload(&mut self, header: FrameHeader, data: Bytes) {
        if self.role == Role::Server && data.len() >= self.config.zero_copy_threshold {
            header.encode(self.transmit.tail_mut());
            self.transmit.added(header.encoded_len());
            self.transmit.push_bytes(data);
        } else {
            self.write_frame(header, &data);
        }
    }

    /// Frames a payload by copying it into the transmit queue (masking it as a client).
    pub(super) fn write_frame(&mut self, mut header: FrameHeader, payload: &[u8]) {
        if self.role == Role::Client {
            header.mask = Some(rand::random());
        }
        let tail = self.transmit.tail_mut();
        let before = tail.len();
        tail.reserve(header.encoded_len() + payload.len());
        header.encode(tail);
        let start = tail.len();
        tail.extend_from_slice(payload);
        if let Some(key) = header.mask {
            apply_mask(&mut tail[start..], key, 0);
        }
        let added = tail.len() - before;
        self.transmit.added(added);
    }
}
