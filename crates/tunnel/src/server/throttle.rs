//! Bytes per second per tunnel: a token bucket shared by every stream of a
//! tunnel, both directions counted.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// A token bucket: `rate` bytes per second, bursts up to one second's
/// worth. Bytes are charged after they pass, so the balance may go below
/// zero by one read or write; the next waits until it is back above.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    pub(crate) fn new(rate: u64) -> Bucket {
        Bucket {
            rate: rate.max(1),
            state: Mutex::new((rate.max(1) as f64, Instant::now())),
        }
    }

    fn refill(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let burst = self.rate as f64;
        let (tokens, last) = &mut *state;
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * burst).min(burst);
        *last = now;
        state
    }

    /// `Ok` when bytes may pass now, or how long until they may.
    fn ready(&self) -> Result<(), Duration> {
        let state = self.refill();
        if state.0 > 0.0 {
            Ok(())
        } else {
            let wait = (-state.0 + 1.0) / self.rate as f64;
            Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
        }
    }

    /// Charges `n` bytes that passed.
    fn charge(&self, n: usize) {
        self.refill().0 -= n as f64;
    }
}

/// A stream to an agent: its slot among the agent's streams, and the
/// tunnel's bandwidth limit, if any.
pub(crate) struct Limited<S> {
    inner: S,
    bucket: Option<Arc<Bucket>>,
    read_wait: Option<Pin<Box<Sleep>>>,
    write_wait: Option<Pin<Box<Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

impl<S> Limited<S> {
    pub(crate) fn new(inner: S, bucket: Option<Arc<Bucket>>, slot: OwnedSemaphorePermit) -> Self {
        Limited {
            inner,
            bucket,
            read_wait: None,
            write_wait: None,
            _slot: slot,
        }
    }
}

/// Ready when bytes may pass, Pending until the bucket refills.
fn poll_allowed(
    bucket: &Option<Arc<Bucket>>,
    wait: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(bucket) = bucket else {
        return Poll::Ready(());
    };
    loop {
        if let Some(sleep) = wait {
            ready!(sleep.as_mut().poll(cx));
            *wait = None;
        }
        match bucket.ready() {
            Ok(()) => return Poll::Ready(()),
            Err(delay) => *wait = Some(Box::pin(tokio::time::sleep(delay))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(poll_allowed(&this.bucket, &mut this.read_wait, cx));
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(bucket) = &this.bucket {
            bucket.charge(buf.filled().len() - before);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(poll_allowed(&this.bucket, &mut this.write_wait, cx));
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        if let Some(bucket) = &this.bucket {
            bucket.charge(n);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bucket_allows_its_rate_then_waits() {
        let bucket = Bucket::new(1000);
        assert_eq!(bucket.ready(), Ok(()));
        bucket.charge(1500);
        // 500 bytes of debt at 1000 bytes/s: about half a second to wait.
        let wait = bucket.ready().unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(502),
            "{wait:?}"
        );
    }
}
