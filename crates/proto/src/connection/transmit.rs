//! The outgoing byte queue: small writes are coalesced into one buffer, large
//! payloads are queued as shared [`Bytes`] without a copy.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Bytes waiting to be written to the socket, in order.
///
/// Implements [`Buf`]; an I/O layer writes [`Buf::chunks_vectored`] and calls
/// [`Buf::advance`] with what the socket took.
#[derive(Debug, Default)]
pub struct Transmit {
    queue: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl Transmit {
    /// Appends `data` without copying it.
    pub(crate) fn push_bytes(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            self.queue.push_back(self.tail.split().freeze());
        }
        self.len += data.len();
        self.queue.push_back(data);
    }

    /// The buffer that small writes go to, for writing in place (masking).
    pub(crate) fn tail_mut(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Accounts for bytes written directly into [`Transmit::tail_mut`].
    pub(crate) fn added(&mut self, n: usize) {
        self.len += n;
    }

    /// Bytes waiting to be written (the browser's `bufferedAmount`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the coalescing buffer's memory when nothing is queued, so that
    /// an idle connection holds none; the I/O layer may hand it to another
    /// connection with [`Transmit::give_buffer`].
    pub fn take_idle_buffer(&mut self) -> Option<BytesMut> {
        if self.len == 0 && self.tail.capacity() > 0 {
            return Some(std::mem::take(&mut self.tail));
        }
        None
    }

    /// Whether the coalescing buffer has no memory (a fresh or idle
    /// connection): [`Transmit::give_buffer`] would be taken.
    pub fn wants_buffer(&self) -> bool {
        self.tail.capacity() == 0
    }

    /// Gives the coalescing buffer an empty allocation to write into;
    /// ignored when it already has one.
    pub fn give_buffer(&mut self, buf: BytesMut) {
        if self.wants_buffer() && buf.is_empty() {
            self.tail = buf;
        }
    }

    /// Frees the coalescing buffer's memory when nothing is queued.
    pub fn shrink_idle(&mut self) {
        if self.len == 0 {
            self.tail = BytesMut::new();
            self.queue = VecDeque::new();
        }
    }

    /// Takes everything queued as one contiguous buffer (tests, simple callers).
    pub fn take_all(&mut self) -> Bytes {
        if self.queue.is_empty() {
            self.len = 0;
            return self.tail.split().freeze();
        }
        let mut all = BytesMut::with_capacity(self.len);
        while self.has_remaining() {
            let chunk = self.chunk();
            let n = chunk.len();
            all.extend_from_slice(chunk);
            self.advance(n);
        }
        all.freeze()
    }
}

impl Buf for Transmit {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.queue.front() {
            Some(front) => front,
            None => &self.tail,
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for chunk in self
            .queue
            .iter()
            .map(|b| &b[..])
            .chain(std::iter::once(&self.tail[..]))
        {
            if n == dst.len() {
                break;
            }
            if !chunk.is_empty() {
                dst[n] = IoSlice::new(chunk);
                n += 1;
            }
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advanced past the queued bytes");
        self.len -= cnt;
        while cnt > 0 {
            match self.queue.front_mut() {
                Some(front) if front.len() <= cnt => {
                    cnt -= front.len();
                    self.queue.pop_front();
                }
                Some(front) => {
                    front.advance(cnt);
                    return;
                }
                None => {
                    self.tail.advance(cnt);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_copied_and_shared_pieces() {
        let mut t = Transmit::default();
        t.tail_mut().extend_from_slice(b"ab");
        t.added(2);
        t.push_bytes(Bytes::from_static(b"cdef"));
        t.tail_mut().extend_from_slice(b"gh");
        t.added(2);
        assert_eq!(t.len(), 8);
        let mut slices = [IoSlice::new(&[]); 8];
        let n = t.chunks_vectored(&mut slices);
        let joined: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(joined, b"abcdefgh");
        t.advance(3);
        assert_eq!(t.chunk(), b"def");
        t.advance(4);
        assert_eq!(t.chunk(), b"h");
        assert_eq!(t.take_all(), Bytes::from_static(b"h"));
        assert!(t.is_empty());
    }
}
