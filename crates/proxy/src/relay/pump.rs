//! [`Pump`]: one direction of a spliced connection.
//!
//! ```text
//!   read ──► buf ──scan (FrameSplitter events)──► Segment: forward buf[..n], skip, wait or fail
//!              ▲                                        │
//!              └──── the unused tail (≤ MAX_CARRY) ─────┘   timer ──► keepalive ping / idle close
//! ```

use bytes::Bytes;
use sockeye_proto::frame::FrameHeader;
use sockeye_proto::relay::{FrameSplitter, RelayEvent, MAX_CARRY};
use sockeye_proto::{CloseCode, OpCode, ProtocolError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::debug;

use super::frames::{parse_close, ControlFrame, PING_LEN};
use super::{flag, ConnShared, Side};
use crate::metrics::ProxyMetrics;
use crate::observer::{Direction, FrameInfo, Initiator};
use crate::Error;

/// Why a pump stopped.
#[derive(Debug)]
pub(super) enum End {
    /// The source closed its side (or failed reading).
    SourceGone(Option<std::io::Error>),
    /// The source broke the framing rules.
    Framing(ProtocolError),
    /// Writing to the destination failed: it is gone.
    WriteFailed(std::io::Error),
}

/// What [`Pump::scan`] found in a piece of input.
struct Segment {
    /// Forward this many bytes from the start of the piece.
    forward: usize,
    /// Then go on after this many bytes (past a frame cut out, or the end).
    consumed: usize,
    next: Next,
}

enum Next {
    /// Scan on from `consumed`.
    More,
    /// Everything usable was used; the rest waits for more bytes.
    Wait,
    /// The input cannot be split further.
    Failed(ProtocolError),
}

/// One direction: reads from one side, writes to the other.
pub(super) struct Pump<'c, 'a> {
    conn: &'c ConnShared<'a>,
    direction: Direction,
    from: Side,
    to: Side,
    splitter: FrameSplitter,
    /// The header of the frame in progress, and where it started in the
    /// current piece of input (used to cut out a whole control frame).
    header: Option<FrameHeader>,
    frame_start: usize,
    /// A control frame's payload, unmasked (whole: the splitter guarantees it).
    control: [u8; 125],
    control_len: usize,
    /// The preview for the observer, when it wants frames.
    preview: Vec<u8>,
    preview_len: usize,
    reported: bool,
    /// A close frame went to the destination: nothing more may follow it.
    closed_out: bool,
    /// A close frame came from the source.
    close_in: bool,
    ping_seq: u32,
    /// Frames relayed since the last count went to the metrics.
    frames: u64,
}

impl<'c, 'a> Pump<'c, 'a> {
    pub(super) fn new(conn: &'c ConnShared<'a>, direction: Direction) -> Self {
        let (from, to) = match direction {
            Direction::ClientToBackend => (Side::Client, Side::Backend),
            Direction::BackendToClient => (Side::Backend, Side::Client),
        };
        Pump {
            conn,
            direction,
            from,
            to,
            splitter: FrameSplitter::new(),
            header: None,
            frame_start: 0,
            control: [0; 125],
            control_len: 0,
            preview: vec![0; conn.frames.unwrap_or(0)],
            preview_len: 0,
            reported: false,
            closed_out: false,
            close_in: false,
            ping_seq: 0,
            frames: 0,
        }
    }

    /// Relays until the source is gone, the destination fails, or the
    /// source breaks the framing rules; `pre` are bytes already read from
    /// the source (behind the HTTP head).
    pub(super) async fn run<R, W>(mut self, mut reader: R, mut writer: W, pre: Bytes)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let config = &self.conn.proxy.config;
        let metrics = &self.conn.proxy.metrics;
        let mut buf = ReadBuffer::new(config.read_buffer_size.max(2 * MAX_CARRY), metrics);
        if !pre.is_empty() {
            match self.relay(&mut writer, &pre, self.conn.now_ms()).await {
                // `pre` is at most hyper's read buffer; its unused tail is
                // at most MAX_CARRY, which the buffer holds.
                Ok(used) => buf.keep(&pre[used..]),
                Err(end) => return self.finish(&mut writer, end).await,
            }
        }
        let mut timer_on = config.keepalive.is_some() || config.idle_timeout.is_some();
        let timer = tokio::time::sleep_until(self.next_deadline(self.conn.now_ms(), false));
        tokio::pin!(timer);
        let mut stopping = false;
        let end = loop {
            tokio::select! {
                biased;
                _ = flag(&self.conn.stop), if !stopping => {
                    stopping = true;
                    let close = self.close_out(&mut writer, CloseCode::GOING_AWAY, "proxy shutting down", Initiator::Proxy);
                    if let Err(end) = close.await {
                        break end;
                    }
                }
                _ = &mut timer, if timer_on => match self.on_timer(&mut writer).await {
                    Ok(next) => {
                        // A second without a relayed frame (keepalives do
                        // not count): the buffer goes back.
                        let now = self.conn.now_ms();
                        if now.saturating_sub(self.conn.activity_ms()) >= 1000 {
                            buf.release();
                        }
                        match next {
                            Some(next) => timer.as_mut().reset(next),
                            None => timer_on = false,
                        }
                    }
                    Err(end) => break end,
                },
                read = reader.read(buf.spare()) => match read {
                    Ok(0) => break End::SourceGone(None),
                    Err(error) => break End::SourceGone(Some(error)),
                    Ok(n) => {
                        let input = buf.filled(n);
                        metrics.buffer_held(input.len());
                        let now = self.conn.now_ms();
                        self.conn.touch_hop(self.from, now);
                        match self.relay(&mut writer, input, now).await {
                            Ok(used) => buf.advance(n, used),
                            Err(end) => break end,
                        }
                    }
                },
            }
        };
        self.finish(&mut writer, end).await;
    }

    /// Forwards what `input` holds of whole frames and frame pieces; returns
    /// the bytes used (the rest must be offered again with more after it).
    async fn relay<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        input: &[u8],
        now: u64,
    ) -> Result<usize, End> {
        let mut pos = 0;
        let mut written = 0;
        let failure = loop {
            let segment = self.scan(&input[pos..]);
            if segment.forward > 0 {
                let bytes = &input[pos..pos + segment.forward];
                writer.write_all(bytes).await.map_err(End::WriteFailed)?;
                written += segment.forward;
            }
            pos += segment.consumed;
            match segment.next {
                Next::More => {}
                Next::Wait => break None,
                Next::Failed(error) => break Some(error),
            }
        };
        if written > 0 {
            writer.flush().await.map_err(End::WriteFailed)?;
            self.conn.touch_hop(self.to, now);
            self.conn.touch_activity(now);
        }
        let frames = std::mem::take(&mut self.frames);
        self.conn
            .proxy
            .metrics
            .relayed(self.direction, frames, written as u64);
        match failure {
            None => Ok(pos),
            Some(error) => Err(End::Framing(error)),
        }
    }

    /// Runs the splitter over `input` up to the next cut: a keepalive pong
    /// to swallow, a close frame (nothing after it is forwarded), the end
    /// of what can be used, or a framing error.
    fn scan(&mut self, input: &[u8]) -> Segment {
        if self.closed_out {
            return Segment {
                forward: 0,
                consumed: input.len(),
                next: Next::Wait,
            };
        }
        let mut pos = 0;
        loop {
            if self.header.is_none() && self.conn.frames.is_none() {
                // Nobody looks at data frames: pass over whole ones at one
                // header parse each.
                let (skipped, frames) = self.splitter.skip_whole_data_frames(&input[pos..]);
                pos += skipped;
                self.frames += frames;
            }
            let (event, used) = match self.splitter.next_event(&input[pos..]) {
                Ok(Some(found)) => found,
                Ok(None) => return segment(pos, pos, Next::Wait),
                Err(error) => return segment(pos, pos, Next::Failed(error)),
            };
            pos += used;
            match event {
                RelayEvent::FrameStart(header) => {
                    self.header = Some(header);
                    self.frame_start = pos - used;
                    self.control_len = 0;
                    self.preview_len = 0;
                    self.reported = false;
                    if !header.opcode.is_control() && self.preview.is_empty() {
                        self.report(&header, 0);
                    }
                }
                RelayEvent::Payload(chunk) => {
                    let Some(header) = self.header else { continue };
                    if header.opcode.is_control() {
                        self.control_len = chunk.unmask_to(&mut self.control);
                    } else if !self.reported && !self.preview.is_empty() {
                        let have = self.preview_len;
                        self.preview_len += chunk.unmask_to(&mut self.preview[have..]);
                        if self.preview_len == self.preview.len() {
                            self.report(&header, self.preview_len);
                        }
                    }
                }
                RelayEvent::FrameEnd => {
                    let Some(header) = self.header.take() else {
                        continue;
                    };
                    if !header.opcode.is_control() {
                        self.frames += 1;
                        self.report(&header, self.preview_len);
                        continue;
                    }
                    if header.opcode == OpCode::Pong && self.is_keepalive_pong() {
                        // Cut it out: forward what came before it, skip it.
                        return segment(self.frame_start, pos, Next::More);
                    }
                    self.frames += 1;
                    self.report(&header, self.control_len.min(self.preview.len()));
                    if header.opcode == OpCode::Close {
                        let (code, reason) = parse_close(&self.control[..self.control_len]);
                        self.conn
                            .record_close(code, &reason, self.direction.source());
                        self.close_in = true;
                        self.closed_out = true;
                        // Nothing may follow a close frame.
                        return segment(pos, input.len(), Next::Wait);
                    }
                }
            }
        }
    }

    fn is_keepalive_pong(&self) -> bool {
        self.control_len == PING_LEN
            && self.control[..4] == self.conn.ping_prefix[self.from as usize]
    }

    /// Tells the observer about the frame in progress, once.
    fn report(&mut self, header: &FrameHeader, preview_len: usize) {
        if self.reported || self.conn.frames.is_none() {
            return;
        }
        self.reported = true;
        let info = FrameInfo {
            opcode: header.opcode,
            fin: header.fin,
            rsv1: header.rsv1,
            masked: header.mask.is_some(),
            payload_len: header.payload_len,
        };
        let preview = if header.opcode.is_control() {
            &self.control[..preview_len]
        } else {
            &self.preview[..preview_len]
        };
        self.conn
            .observer
            .on_frame(self.conn.id, self.direction, &info, preview);
    }

    /// Keepalive and idle timeout; returns when to look again (`None`: never).
    async fn on_timer<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
    ) -> Result<Option<Instant>, End> {
        let config = &self.conn.proxy.config;
        let now = self.conn.now_ms();
        if let Some(idle) = config.idle_timeout {
            if now >= self.conn.activity_ms().saturating_add(millis(idle)) {
                let (code, reason) = (CloseCode::GOING_AWAY, "idle timeout");
                self.close_out(writer, code, reason, Initiator::Proxy)
                    .await?;
                return Ok(None);
            }
        }
        if self.closed_out || self.close_in {
            return Ok(None);
        }
        let mut deferred = false;
        if let Some(interval) = config.keepalive {
            if now >= self.conn.hop_ms(self.to).saturating_add(millis(interval)) {
                if self.splitter.is_mid_frame() {
                    // A ping cannot go inside a frame; try again later.
                    deferred = true;
                } else {
                    self.ping_seq = self.ping_seq.wrapping_add(1);
                    let prefix = self.conn.ping_prefix[self.to as usize];
                    let ping = ControlFrame::ping(prefix, self.ping_seq, self.to == Side::Backend);
                    writer
                        .write_all(ping.as_bytes())
                        .await
                        .map_err(End::WriteFailed)?;
                    writer.flush().await.map_err(End::WriteFailed)?;
                    self.conn.touch_hop(self.to, now);
                    self.conn.proxy.metrics.keepalive_ping();
                }
            }
        }
        Ok(Some(self.next_deadline(now, deferred)))
    }

    /// The earliest of the next keepalive check and the idle deadline, never
    /// earlier than a millisecond from `now`.
    fn next_deadline(&self, now: u64, deferred: bool) -> Instant {
        let config = &self.conn.proxy.config;
        let keepalive = config.keepalive.map(|interval| {
            let since = if deferred {
                now
            } else {
                self.conn.hop_ms(self.to)
            };
            since.saturating_add(millis(interval))
        });
        let idle = config
            .idle_timeout
            .map(|idle| self.conn.activity_ms().saturating_add(millis(idle)));
        let at = match (keepalive, idle) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => u64::MAX / 4,
        };
        self.conn.at_ms(at.max(now + 1))
    }

    /// Sends a close of the proxy's own to the destination, once, at a frame
    /// boundary (inside a frame the FIN that follows has to do).
    async fn close_out<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        code: CloseCode,
        reason: &str,
        initiator: Initiator,
    ) -> Result<(), End> {
        if self.closed_out {
            return Ok(());
        }
        self.conn.record_close(code, reason, initiator);
        self.closed_out = true;
        if self.splitter.is_mid_frame() {
            return Ok(());
        }
        let close = ControlFrame::close(code, reason, self.to == Side::Backend);
        writer
            .write_all(close.as_bytes())
            .await
            .map_err(End::WriteFailed)?;
        writer.flush().await.map_err(End::WriteFailed)
    }

    /// Closes the destination after the source ended: a close frame on the
    /// source's behalf when it vanished or misbehaved, then FIN.
    async fn finish<W: AsyncWrite + Unpin>(mut self, writer: &mut W, end: End) {
        let id = self.conn.id;
        let backend_side = self.from == Side::Backend;
        let made = match end {
            End::SourceGone(error) if !self.close_in && !self.closed_out => {
                debug!(%id, direction = %self.direction, "source gone without a close frame: {error:?}");
                let error = error.unwrap_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "closed without a close frame",
                    )
                });
                if backend_side {
                    self.conn.proxy.metrics.backend_error();
                    self.conn.observer.on_error(id, &Error::Io(error));
                    Some((CloseCode::BAD_GATEWAY, "backend connection lost"))
                } else {
                    Some((CloseCode::GOING_AWAY, "client went away"))
                }
            }
            End::Framing(source) => {
                debug!(%id, direction = %self.direction, "framing error: {source}");
                let error = Error::Framing {
                    direction: self.direction,
                    source,
                };
                self.conn.observer.on_error(id, &error);
                if backend_side {
                    self.conn.proxy.metrics.backend_error();
                    Some((CloseCode::BAD_GATEWAY, "backend sent an invalid frame"))
                } else {
                    Some((CloseCode::PROTOCOL, "client sent an invalid frame"))
                }
            }
            End::SourceGone(_) => None,
            End::WriteFailed(error) => {
                debug!(%id, direction = %self.direction, "destination gone: {error}");
                return;
            }
        };
        if let Some((code, reason)) = made {
            let initiator = self.direction.source();
            if self
                .close_out(writer, code, reason, initiator)
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = writer.shutdown().await;
    }
}

/// The first read after the buffer was given back: big enough for a chat
/// message or a ping, small enough to sit in every connection's task.
const SMALL_READ: usize = 1024;

/// The read buffer of one direction: `size` bytes while data flows, and
/// none while the source is quiet, when a small first read wakes it up.
/// Only the tail of an incomplete header or control frame is ever kept
/// from one read to the next.
struct ReadBuffer<'m> {
    big: Vec<u8>,
    /// Bytes at the start of `big` kept from the last read.
    held: usize,
    size: usize,
    small: [u8; SMALL_READ],
    metrics: &'m ProxyMetrics,
}

impl<'m> ReadBuffer<'m> {
    fn new(size: usize, metrics: &'m ProxyMetrics) -> Self {
        let mut buf = ReadBuffer {
            big: Vec::new(),
            held: 0,
            size,
            small: [0; SMALL_READ],
            metrics,
        };
        buf.allocate();
        buf
    }

    fn allocate(&mut self) {
        if self.big.is_empty() {
            self.big = vec![0; self.size];
            self.metrics.buffers_allocated(self.size as i64);
        }
    }

    /// Gives the big buffer back, unless it holds bytes.
    fn release(&mut self) {
        if !self.big.is_empty() && self.held == 0 {
            self.big = Vec::new();
            self.metrics.buffers_allocated(-(self.size as i64));
        }
    }

    /// Where the next read goes.
    fn spare(&mut self) -> &mut [u8] {
        if self.big.is_empty() {
            &mut self.small
        } else {
            &mut self.big[self.held..]
        }
    }

    /// The bytes to relay after a read of `n`.
    fn filled(&self, n: usize) -> &[u8] {
        if self.big.is_empty() {
            &self.small[..n]
        } else {
            &self.big[..self.held + n]
        }
    }

    /// Keeps what the relay did not use of a read of `n`.
    fn advance(&mut self, n: usize, used: usize) {
        if self.big.is_empty() {
            // Woken by a small read: back to the big buffer if more is
            // coming (a full small read) or a tail must be kept.
            if used < n || n == SMALL_READ {
                let rest = self.small;
                self.allocate();
                self.keep(&rest[used..n]);
            }
        } else {
            let end = self.held + n;
            self.big.copy_within(used..end, 0);
            self.held = end - used;
        }
    }

    /// Starts the buffer with `tail` (at most MAX_CARRY bytes).
    fn keep(&mut self, tail: &[u8]) {
        self.allocate();
        self.big[..tail.len()].copy_from_slice(tail);
        self.held = tail.len();
    }
}

impl Drop for ReadBuffer<'_> {
    fn drop(&mut self) {
        if !self.big.is_empty() {
            self.metrics.buffers_allocated(-(self.size as i64));
        }
    }
}

fn segment(forward: usize, consumed: usize, next: Next) -> Segment {
    Segment {
        forward,
        consumed,
        next,
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 4)
}
