//! Pure frame-level pieces: header, opcode, masking, close codes, UTF-8.
//! Nothing here keeps connection state.

mod close;
mod header;
mod mask;
mod opcode;
mod utf8;

pub use close::{CloseCode, CloseFrame, MAX_REASON_LEN};
pub use header::{FrameHeader, MAX_HEADER_LEN};
pub use mask::{apply_mask, apply_mask_bytewise};
pub use opcode::OpCode;
pub use utf8::{Utf8Bytes, Utf8Validator};
