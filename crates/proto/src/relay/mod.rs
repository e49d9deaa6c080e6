//! Frame boundaries for relaying: a splitter that turns a byte stream into
//! frame starts, payload pieces and frame ends, without ever holding a
//! payload.
//!
//! ```text
//!   bytes read ──► FrameSplitter::next_event ──► FrameStart(header) ─┐
//!                        │                       Payload(chunk)  ... ├─► forward the same bytes,
//!                        │                       FrameEnd          ─┘   observe, cut, inject
//!                        └─► Ok(None): keep the unused tail (at most MAX_CARRY bytes)
//!                                      and call again with more bytes after it
//! ```
//!
//! A proxy that splices two WebSocket connections forwards bytes as they
//! arrive; it only needs to know where frames start and end (to inject a
//! keepalive ping between frames, to cut out the pong that answers it, to
//! see a close frame go by). [`FrameSplitter`] answers exactly that. It is
//! sans-I/O and keeps no buffer: a data frame's payload comes out as
//! [`RelayEvent::Payload`] slices of the caller's input, however large the
//! frame, so memory per direction stays one read buffer whatever the message
//! size. The only bytes the caller must keep between reads are an incomplete
//! header or control frame: at most [`MAX_CARRY`] bytes.
//!
//! Payload slices are as on the wire (masked when the sender masked them).
//! [`PayloadChunk::unmask_into`] copies a piece out unmasked for a caller
//! that wants to look at it (a preview for an inspector); forwarding never
//! needs it.
//!
//! ```
//! use sockeye_proto::relay::{FrameSplitter, RelayEvent};
//! use sockeye_proto::OpCode;
//!
//! // A masked text frame "Hello" (RFC 6455 section 5.7), then half of the next header.
//! let wire = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58, 0x82];
//! let mut splitter = FrameSplitter::new();
//! let mut pos = 0;
//! let mut text = Vec::new();
//! while let Some((event, used)) = splitter.next_event(&wire[pos..]).unwrap() {
//!     match event {
//!         RelayEvent::FrameStart(header) => assert_eq!(header.opcode, OpCode::Text),
//!         RelayEvent::Payload(chunk) => chunk.unmask_into(&mut text),
//!         RelayEvent::FrameEnd => assert!(!splitter.is_mid_frame()),
//!     }
//!     pos += used;
//! }
//! assert_eq!(text, b"Hello");
//! assert_eq!(&wire[pos..], &[0x82]); // kept for the next call
//! ```

mod splitter;

pub use splitter::{FrameSplitter, PayloadChunk, RelayEvent, MAX_CARRY};
