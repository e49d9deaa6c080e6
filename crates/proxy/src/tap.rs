//! [`Tapped`]: a body that streams through unchanged while an [`Observer`]
//! sees its first bytes and, at the end, its size.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::observer::{BodySide, ConnId, Observer};

/// `inner`, reporting to `observer`: [`Observer::on_body`] with each
/// chunk's bytes until [`Observer::wants_bodies`] bytes have been shown,
/// then [`Observer::on_body_end`] once with the total.
pub(crate) struct Tapped<B: Body> {
    inner: B,
    tap: Option<Tap>,
}

struct Tap {
    observer: Arc<dyn Observer>,
    id: ConnId,
    side: BodySide,
    /// Bytes still to show.
    left: usize,
    total: u64,
}

impl<B: Body> Tapped<B> {
    /// Taps `inner` when `observer` wants bodies; otherwise only wraps it.
    pub(crate) fn new(inner: B, observer: &Arc<dyn Observer>, id: ConnId, side: BodySide) -> Self {
        let left = observer.wants_bodies();
        let tap = (left > 0).then(|| Tap {
            observer: Arc::clone(observer),
            id,
            side,
            left,
            total: 0,
        });
        Tapped { inner, tap }
    }
}

impl<B: Body> Tapped<B> {
    /// Reports the end, once.
    fn end(&mut self, complete: bool) {
        if let Some(tap) = self.tap.take() {
            tap.observer
                .on_body_end(tap.id, tap.side, tap.total, complete);
        }
    }
}

impl<B: Body> Drop for Tapped<B> {
    /// A body dropped before its end broke off (the client or the backend
    /// went away), unless it was empty or known to be over.
    fn drop(&mut self) {
        let over = self.inner.is_end_stream();
        self.end(over);
    }
}

impl<B> Body for Tapped<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let Some(tap) = &mut this.tap else {
            return Poll::Ready(frame);
        };
        let ended = match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    tap.total += data.len() as u64;
                    let shown = data.len().min(tap.left);
                    if shown > 0 {
                        tap.left -= shown;
                        tap.observer.on_body(tap.id, tap.side, &data[..shown]);
                    }
                }
                // hyper stops polling a body that says it has ended (its
                // length is known), so the end is reported here, not at `None`.
                this.inner.is_end_stream().then_some(true)
            }
            Some(Err(_)) => Some(false),
            None => Some(true),
        };
        if let Some(complete) = ended {
            this.end(complete);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
