//! One spare read buffer and one spare write buffer per thread.
//!
//! A connection waiting for input holds no buffer: when a read finds the
//! socket empty and nothing is half-received, its read buffer goes back here,
//! and its write buffer too once everything queued is written. The next
//! connection on this thread with bytes to read or write takes them back.
//! So 10,000 quiet connections hold two buffers between them, as an event
//! loop with one shared receive buffer does (uWebSockets), while a busy
//! connection keeps reusing the same allocation and never pays for malloc.

use std::cell::Cell;

use bytes::BytesMut;

/// Buffers larger than this are freed rather than kept, so one big message
/// does not leave a big buffer behind.
pub(crate) const KEEP_CAPACITY: usize = 64 * 1024;

thread_local! {
    static READ: Cell<BytesMut> = Cell::new(BytesMut::new());
    static WRITE: Cell<BytesMut> = Cell::new(BytesMut::new());
}

/// The thread's spare read buffer, or an empty one.
pub(crate) fn take_read() -> BytesMut {
    READ.try_with(Cell::take).unwrap_or_default()
}

/// Gives an empty read buffer back.
pub(crate) fn put_read(buf: BytesMut) {
    put(&READ, buf);
}

/// The thread's spare write buffer, or an empty one.
pub(crate) fn take_write() -> BytesMut {
    WRITE.try_with(Cell::take).unwrap_or_default()
}

/// Gives an empty write buffer back.
pub(crate) fn put_write(buf: BytesMut) {
    put(&WRITE, buf);
}

fn put(slot: &'static std::thread::LocalKey<Cell<BytesMut>>, buf: BytesMut) {
    debug_assert!(buf.is_empty());
    if buf.capacity() == 0 || buf.capacity() > KEEP_CAPACITY {
        return;
    }
    // The slot keeps the larger of the two; the other is freed.
    let _ = slot.try_with(|slot| {
        let old = slot.take();
        slot.set(if old.capacity() >= buf.capacity() {
            old
        } else {
            buf
        });
    });
}
