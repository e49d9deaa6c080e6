//! The receive path: frames out of the read buffer, messages out of frames.

use bytes::{Buf, Bytes, BytesMut};

use super::{CloseCause, Connection, FrameInProgress, Message, MessageInProgress, Role, State};
use crate::error::{Error, ProtocolError};
use crate::frame::{apply_mask, CloseFrame, FrameHeader, OpCode, Utf8Bytes, Utf8Validator};

/// The largest binary frame that waits to be buffered whole (see
/// `read_payload`).
pub(super) const WAIT_WHOLE_MAX: u64 = 1 << 20;

impl Connection {
    /// The next message or control frame from the bytes received so far.
    ///
    /// `None` means more bytes are needed (or the connection is closed).
    /// `Some(Err(_))` means the peer broke the protocol: a close frame with
    /// the matching code is queued and the connection is closed; nothing more
    /// comes out of it. A ping is answered with a pong before it is returned,
    /// and a close is answered with a close.
    pub fn poll_message(&mut self) -> Option<Result<Message, Error>> {
        if self.state == State::Closed {
            return None;
        }
        match self.next_message() {
            Ok(Some(message)) => Some(Ok(message)),
            Ok(None) => None,
            Err(error) => Some(Err(self.fail(error))),
        }
    }

    fn next_message(&mut self) -> Result<Option<Message>, Error> {
        loop {
            if self.frame.is_none() {
                let Some((header, len)) = FrameHeader::parse(&self.read)? else {
                    return Ok(None);
                };
                self.check_header(&header)?;
                self.read.advance(len);
                // Fast path without a round trip through `self.frame`: a
                // whole unfragmented, uncompressed data frame is buffered.
                let whole = header.payload_len as usize;
                if self.message.is_none()
                    && header.fin
                    && !header.rsv1
                    && !header.opcode.is_control()
                    && self.read.len() >= whole
                {
                    let payload = self.take_payload(whole, header.mask, 0);
                    return Ok(Some(if header.opcode == OpCode::Text {
                        Message::Text(utf8(payload)?)
                    } else {
                        Message::Binary(payload)
                    }));
                }
                self.frame = Some(FrameInProgress {
                    header,
                    consumed: 0,
                });
            }
            if let Some(message) = self.read_payload()? {
                return Ok(Some(message));
            }
            if self.frame.is_some() {
                return Ok(None);
            }
        }
    }

    /// Checks a header against the role, the extensions and the message in
    /// progress, and the announced length against the limits, before any
    /// payload is buffered.
    fn check_header(&mut self, h: &FrameHeader) -> Result<(), Error> {
        if h.rsv2 || h.rsv3 {
            return Err(ProtocolError::ReservedBits.into());
        }
        if h.rsv1 && (self.deflate.is_none() || !matches!(h.opcode, OpCode::Text | OpCode::Binary))
        {
            return Err(ProtocolError::ReservedBits.into());
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) if !self.config.dangerous.accept_unmasked_frames => {
                return Err(ProtocolError::UnmaskedFrame.into())
            }
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame.into()),
            _ => {}
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControl.into());
            }
            if h.payload_len > 125 {
                return Err(ProtocolError::ControlTooLong.into());
            }
            return Ok(());
        }
        match (h.opcode, &self.message) {
            (OpCode::Continuation, None) => {
                return Err(ProtocolError::UnexpectedContinuation.into())
            }
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation.into())
            }
            _ => {}
        }
        // A compressed frame may be a little longer than what it inflates to
        // (deflate's worst case is about 5.5 % for incompressible data).
        let frame_limit = if h.rsv1 || self.message.as_ref().is_some_and(|m| m.compressed) {
            self.config
                .max_frame_size
                .saturating_add(self.config.max_frame_size / 16 + 64)
        } else {
            self.config.max_frame_size
        };
        if h.payload_len > frame_limit as u64 {
            return Err(Error::TooBig {
                what: "frame",
                size: h.payload_len,
                limit: frame_limit,
            });
        }
        let compressed = match &self.message {
            Some(m) => m.compressed,
            None => h.rsv1,
        };
        if !compressed {
            let so_far = self.message.as_ref().map_or(0, |m| m.data.len()) as u64;
            if so_far + h.payload_len > self.config.max_message_size as u64 {
                return Err(Error::TooBig {
                    what: "message",
                    size: so_far + h.payload_len,
                    limit: self.config.max_message_size,
                });
            }
        }
        Ok(())
    }

    /// Consumes what has arrived of the current frame's payload. Returns a
    /// message when one is complete; clears `self.frame` when the frame is.
    fn read_payload(&mut self) -> Result<Option<Message>, Error> {
        let Some(frame) = self.frame.as_mut() else {
            return Ok(None);
        };
        let header = frame.header;
        let remaining = (header.payload_len - frame.consumed) as usize;

        if header.opcode.is_control() {
            if self.read.len() < remaining {
                return Ok(None);
            }
            let payload = self.take_payload(remaining, header.mask, 0);
            self.frame = None;
            return self.on_control(header.opcode, payload).map(Some);
        }

        // Fast path: a whole unfragmented, uncompressed message is buffered;
        // hand out its bytes without copying them.
        if self.message.is_none() && header.fin && !header.rsv1 && self.read.len() >= remaining {
            let payload = self.take_payload(remaining, header.mask, 0);
            self.frame = None;
            return Ok(Some(if header.opcode == OpCode::Text {
                Message::Text(utf8(payload)?)
            } else {
                Message::Binary(payload)
            }));
        }

        // A binary frame (up to WAIT_WHOLE_MAX) that is a whole message
        // waits until all of its payload is buffered, then goes out by the
        // fast path above: no copy into a message buffer (the I/O layer
        // reserves room for it, see `Connection::read_hint`). Text frames are
        // consumed as they come, so that bad UTF-8 fails before the frame
        // ends; bigger frames too (measured: reading 16 MiB into one fresh
        // buffer was slower than copying it out of a small warm one).
        if self.message.is_none()
            && header.fin
            && !header.rsv1
            && header.opcode == OpCode::Binary
            && header.payload_len <= WAIT_WHOLE_MAX
        {
            return Ok(None);
        }

        if self.message.is_none() {
            let compressed = header.rsv1;
            let reserve = if compressed {
                0
            } else {
                header.payload_len as usize
            };
            self.message = Some(Box::new(MessageInProgress {
                text: header.opcode == OpCode::Text,
                compressed,
                data: BytesMut::with_capacity(reserve),
                utf8: Utf8Validator::new(),
            }));
        }

        let available = remaining.min(self.read.len());
        let offset = frame.consumed as usize;
        frame.consumed += available as u64;
        let frame_done = available == remaining;
        let chunk = self.take_payload(available, header.mask, offset);
        let message = self.message.as_mut().expect("set above");
        if message.compressed {
            let deflate = &mut self
                .deflate
                .as_mut()
                .ok_or(ProtocolError::ReservedBits)?
                .deflate;
            let start = message.data.len();
            deflate.decompress(
                &chunk,
                false,
                &mut message.data,
                self.config.max_message_size,
            )?;
            if frame_done && header.fin {
                deflate.decompress(&[], true, &mut message.data, self.config.max_message_size)?;
            }
            if message.text {
                message.utf8.feed(&message.data[start..])?;
            }
        } else {
            if message.text {
                message.utf8.feed(&chunk)?;
            }
            message.data.extend_from_slice(&chunk);
        }
        if !frame_done {
            return Ok(None);
        }
        self.frame = None;
        if !header.fin {
            return Ok(None);
        }
        let mut message = self.message.take().expect("set above");
        let data = message.data.freeze();
        Ok(Some(if message.text {
            message.utf8.finish()?;
            Message::Text(Utf8Bytes::from_validated(data))
        } else {
            Message::Binary(data)
        }))
    }

    /// Splits `len` payload bytes off the read buffer and unmasks them.
    fn take_payload(&mut self, len: usize, mask: Option<[u8; 4]>, offset: usize) -> Bytes {
        let mut payload = self.read.split_to(len);
        if let Some(key) = mask {
            apply_mask(&mut payload, key, offset);
        }
        payload.freeze()
    }

    fn on_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<Message, Error> {
        match opcode {
            OpCode::Ping => {
                if self.state == State::Open {
                    self.write_frame(
                        FrameHeader::new(OpCode::Pong, payload.len() as u64),
                        &payload,
                    );
                }
                Ok(Message::Ping(payload))
            }
            OpCode::Pong => Ok(Message::Pong(payload)),
            OpCode::Close => {
                let frame = CloseFrame::parse(payload)?;
                if self.state == State::Open {
                    // Echo the peer's status, as RFC 6455 section 5.5.1 suggests.
                    let reply = frame.as_ref().map(|f| CloseFrame::new(f.code, ""));
                    self.write_close(reply.as_ref());
                }
                self.state = State::Closed;
                self.close_reason = Some(Box::new(CloseCause::Handshake(frame.clone())));
                self.read = BytesMut::new();
                self.message = None;
                Ok(Message::Close(frame))
            }
            _ => unreachable!("only control opcodes reach on_control"),
        }
    }
}

fn utf8(payload: Bytes) -> Result<Utf8Bytes, Error> {
    Utf8Bytes::try_from(payload)
}
