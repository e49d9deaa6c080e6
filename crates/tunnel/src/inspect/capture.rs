//! Frame capture (`--capture-frames`): the last messages of a WebSocket,
//! assembled from the frames the proxy reports, inflated when compressed.
//!
//! The proxy shows the first [`PREVIEW_FRAME_BYTES`] of each frame. A
//! message whose frames all fit is kept whole (up to the inspector's
//! `preview_bytes`) and can be resent; a longer one is kept as a preview.
//! Under permessage-deflate with context takeover, inflating needs every
//! compressed byte in order, so once a compressed frame is longer than the
//! preview, that direction's later messages show their sizes only.

use std::collections::VecDeque;

use flate2::{Decompress, FlushDecompress, Status};
use serde_json::{json, Value};
use sockeye_proto::OpCode;
use sockeye_proxy::{Direction, FrameInfo};

use super::store::{content_json, index, now_ms};

/// The bytes of each frame the proxy shows the inspector when capture is
/// on: enough to inflate ordinary compressed messages.
pub(crate) const PREVIEW_FRAME_BYTES: usize = 64 * 1024;

/// The most bytes one message is inflated to, to learn its size (the
/// inflated bytes past `preview_bytes` are counted, not kept).
const MAX_INFLATED: usize = 64 << 20;

/// What permessage-deflate the connection agreed on, from the 101's
/// `Sec-WebSocket-Extensions`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Deflate {
    pub(crate) on: bool,
    /// Per direction (client to backend, backend to client): the sender
    /// starts each message with an empty window.
    pub(crate) no_context_takeover: [bool; 2],
}

impl Deflate {
    pub(crate) fn from_header(extensions: Option<&str>) -> Self {
        let Some(value) = extensions.map(str::to_ascii_lowercase) else {
            return Deflate::default();
        };
        Deflate {
            on: value.contains("permessage-deflate"),
            no_context_takeover: [
                value.contains("client_no_context_takeover"),
                value.contains("server_no_context_takeover"),
            ],
        }
    }
}

/// One captured message (or control frame).
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) seq: u64,
    pub(crate) at_ms: f64,
    pub(crate) direction: Direction,
    pub(crate) opcode: OpCode,
    /// Payload bytes on the wire, all frames.
    pub(crate) wire_size: u64,
    pub(crate) frames: u32,
    pub(crate) compressed: bool,
    /// The size after inflating, when compressed and known.
    pub(crate) inflated_size: Option<u64>,
    /// The (inflated) payload's first bytes.
    pub(crate) data: Vec<u8>,
    /// `data` is the whole message.
    pub(crate) whole: bool,
}

impl Message {
    pub(crate) fn to_json(&self) -> Value {
        let size = self.inflated_size.unwrap_or(self.wire_size);
        let ratio = match (self.compressed, self.inflated_size) {
            (true, Some(inflated)) if inflated > 0 => Some(self.wire_size as f64 / inflated as f64),
            _ => None,
        };
        let mut value = json!({
            "seq": self.seq,
            "at_ms": self.at_ms,
            "direction": self.direction.as_str(),
            "opcode": opcode_name(self.opcode),
            "size": size,
            "wire_size": self.wire_size,
            "frames": self.frames,
            "compressed": self.compressed,
            "compression_ratio": ratio,
            "whole": self.whole,
            "preview": content_json(&self.data),
        });
        if self.opcode == OpCode::Close && self.data.len() >= 2 {
            value["close_code"] = json!(u16::from_be_bytes([self.data[0], self.data[1]]));
            value["close_reason"] = json!(String::from_utf8_lossy(&self.data[2..]));
        }
        value
    }
}

pub(crate) fn opcode_name(opcode: OpCode) -> &'static str {
    match opcode {
        OpCode::Continuation => "continuation",
        OpCode::Text => "text",
        OpCode::Binary => "binary",
        OpCode::Close => "close",
        OpCode::Ping => "ping",
        OpCode::Pong => "pong",
    }
}

/// A data message being assembled in one direction.
#[derive(Debug)]
struct Partial {
    message: Message,
    /// The compressed bytes so far (when compressed and still inflatable).
    compressed: Vec<u8>,
}

/// The capture of one connection.
#[derive(Debug)]
pub(crate) struct Capture {
    pub(crate) messages: VecDeque<Message>,
    /// Messages pushed out by the limit.
    pub(crate) dropped: u64,
    next_seq: u64,
    limit: usize,
    keep: usize,
    deflate: Deflate,
    partial: [Option<Partial>; 2],
    inflaters: [Option<Decompress>; 2],
    /// Inflating this direction is no longer possible (a compressed frame
    /// was longer than its preview, with context takeover).
    lost: [bool; 2],
}

impl Capture {
    pub(crate) fn new(limit: usize, keep: usize, deflate: Deflate) -> Self {
        Capture {
            messages: VecDeque::new(),
            dropped: 0,
            next_seq: 1,
            limit: limit.max(1),
            keep,
            deflate,
            partial: [None, None],
            inflaters: [None, None],
            lost: [false, false],
        }
    }

    /// The next sequence number (messages below it exist or existed).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Takes one frame; `preview` is its first bytes (unmasked).
    pub(crate) fn frame(&mut self, direction: Direction, frame: &FrameInfo, preview: &[u8]) {
        let side = index(direction);
        let cut = (preview.len() as u64) < frame.payload_len;
        if frame.opcode.is_control() {
            let message = Message {
                seq: 0,
                at_ms: now_ms(),
                direction,
                opcode: frame.opcode,
                wire_size: frame.payload_len,
                frames: 1,
                compressed: false,
                inflated_size: None,
                data: preview[..preview.len().min(self.keep)].to_vec(),
                whole: !cut && preview.len() <= self.keep,
            };
            self.push(message);
            return;
        }
        if frame.opcode != OpCode::Continuation || self.partial[side].is_none() {
            let compressed = self.deflate.on && frame.rsv1;
            self.partial[side] = Some(Partial {
                message: Message {
                    seq: 0,
                    at_ms: now_ms(),
                    direction,
                    opcode: frame.opcode,
                    wire_size: 0,
                    frames: 0,
                    compressed,
                    inflated_size: None,
                    data: Vec::new(),
                    whole: true,
                },
                compressed: Vec::new(),
            });
        }
        let partial = self.partial[side].as_mut().expect("set above");
        let message = &mut partial.message;
        message.wire_size += frame.payload_len;
        message.frames += 1;
        if message.compressed {
            if cut {
                // The rest of this frame's compressed bytes were not shown.
                self.lost[side] |= !self.deflate.no_context_takeover[side];
                partial.compressed.clear();
                message.whole = false;
            } else if message.whole {
                partial.compressed.extend_from_slice(preview);
            }
        } else {
            let room = self.keep.saturating_sub(message.data.len());
            message
                .data
                .extend_from_slice(&preview[..preview.len().min(room)]);
            message.whole &= !cut && preview.len() <= room;
        }
        if frame.fin {
            let mut partial = self.partial[side].take().expect("set above");
            if partial.message.compressed {
                self.inflate(side, &mut partial);
            }
            self.push(partial.message);
        }
    }

    /// Inflates a finished compressed message into its `data` (the first
    /// `keep` bytes) and `inflated_size`.
    fn inflate(&mut self, side: usize, partial: &mut Partial) {
        let message = &mut partial.message;
        let takeover = !self.deflate.no_context_takeover[side];
        if !message.whole || (takeover && self.lost[side]) {
            message.whole = false;
            return;
        }
        let inflater = self.inflaters[side].get_or_insert_with(|| Decompress::new(false));
        if !takeover {
            inflater.reset(false);
        }
        partial.compressed.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut input = &partial.compressed[..];
        let mut out = vec![0u8; 16 * 1024];
        let mut total = 0usize;
        loop {
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            let status = inflater.decompress(input, &mut out, FlushDecompress::Sync);
            let used = (inflater.total_in() - before_in) as usize;
            let produced = (inflater.total_out() - before_out) as usize;
            input = &input[used..];
            let room = self.keep.saturating_sub(message.data.len());
            message.data.extend_from_slice(&out[..produced.min(room)]);
            total += produced;
            match status {
                Ok(Status::Ok) | Ok(Status::BufError)
                    if input.is_empty() && produced < out.len() =>
                {
                    break
                }
                Ok(Status::StreamEnd) => break,
                Ok(_) if used == 0 && produced == 0 => break,
                Ok(_) if total > MAX_INFLATED => break,
                Ok(_) => {}
                Err(_) => {
                    // Not inflatable after all: show sizes only from here on.
                    self.lost[side] = true;
                    message.whole = false;
                    message.data.clear();
                    return;
                }
            }
        }
        message.inflated_size = Some(total as u64);
        message.whole = total <= self.keep;
    }

    fn push(&mut self, mut message: Message) {
        message.seq = self.next_seq;
        self.next_seq += 1;
        self.messages.push_back(message);
        while self.messages.len() > self.limit {
            self.messages.pop_front();
            self.dropped += 1;
        }
    }

    /// The captured message `seq`, if still kept.
    pub(crate) fn message(&self, seq: u64) -> Option<&Message> {
        self.messages.iter().find(|m| m.seq == seq)
    }
}
