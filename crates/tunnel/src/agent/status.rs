//! What the agent counts (requests, open WebSockets) and the live status
//! line it keeps on a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sockeye_proxy::{CloseInfo, ConnId, Direction, Error, FrameInfo, Observer};
use sockeye_proxy::{RequestMeta, ResponseMeta};

/// Counters shared by every tunnel of an agent.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) websockets: AtomicU64,
}

/// Counts, then passes everything to the inspector's observer.
pub(crate) struct Counting {
    pub(crate) counters: Arc<Counters>,
    pub(crate) inner: Arc<dyn Observer>,
}

impl std::fmt::Debug for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counting")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Observer for Counting {
    fn on_request(&self, request: &RequestMeta<'_>) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.on_request(request)
    }

    fn on_response(&self, request: &RequestMeta<'_>, response: &ResponseMeta<'_>) {
        self.inner.on_response(request, response)
    }

    fn on_upgrade(&self, conn: ConnId, request: &RequestMeta<'_>, response: &ResponseMeta<'_>) {
        self.counters.websockets.fetch_add(1, Ordering::Relaxed);
        self.inner.on_upgrade(conn, request, response)
    }

    fn wants_frames(&self) -> bool {
        self.inner.wants_frames()
    }

    fn wants_previews(&self) -> usize {
        self.inner.wants_previews()
    }

    fn on_frame(&self, conn: ConnId, direction: Direction, frame: &FrameInfo, preview: &[u8]) {
        self.inner.on_frame(conn, direction, frame, preview)
    }

    fn on_close(&self, conn: ConnId, close: &CloseInfo) {
        self.counters.websockets.fetch_sub(1, Ordering::Relaxed);
        self.inner.on_close(conn, close)
    }

    fn on_error(&self, conn: ConnId, error: &Error) {
        self.inner.on_error(conn, error)
    }
}

/// Keeps one line on stderr up to date: link state, requests, WebSockets.
pub(crate) async fn status_line(
    mut status: tokio::sync::watch::Receiver<super::AgentStatus>,
    counters: Arc<Counters>,
) {
    use std::io::Write;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = status.changed() => if changed.is_err() { break },
        }
        let link = match &status.borrow().link {
            crate::inspect::LinkStatus::Connecting => "connecting".to_owned(),
            crate::inspect::LinkStatus::Connected => "connected".to_owned(),
            crate::inspect::LinkStatus::Reconnecting { reason } => {
                format!("reconnecting ({reason})")
            }
        };
        let line = format!(
            "\r\x1b[2K{link} | {} requests | {} WebSockets open",
            counters.requests.load(Ordering::Relaxed),
            counters.websockets.load(Ordering::Relaxed),
        );
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(line.as_bytes());
        let _ = stderr.flush();
    }
}
