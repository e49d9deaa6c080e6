//! What pipe mode and the prompt share: the task that prints what arrives,
//! pings, and closing with a bounded wait.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sockeye::{CloseCode, CloseFrame, MaybeTlsStream, Message, ReadHalf, WriteHalf};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval};

use super::exit::{peer_close, session_failure, Failure};
use super::output::Style;

pub(crate) type Reader = ReadHalf<MaybeTlsStream>;
pub(crate) type Writer = WriteHalf<MaybeTlsStream>;

/// Where received messages go.
#[derive(Debug)]
pub(crate) enum Sink {
    /// Pipe mode: flushed after every message, for `tail -f log`.
    Stdout(tokio::io::Stdout),
    /// Above the prompt.
    Prompt(PromptWriter),
    /// Tests: what would have been printed.
    #[cfg(test)]
    Memory(Arc<Mutex<Vec<u8>>>),
}

/// rustyline-async's writer, which has no `Debug`.
pub(crate) struct PromptWriter(pub(crate) rustyline_async::SharedWriter);

impl std::fmt::Debug for PromptWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PromptWriter")
    }
}

impl Clone for Sink {
    fn clone(&self) -> Self {
        match self {
            Sink::Stdout(_) => Sink::Stdout(tokio::io::stdout()),
            Sink::Prompt(w) => Sink::Prompt(PromptWriter(w.0.clone())),
            #[cfg(test)]
            Sink::Memory(m) => Sink::Memory(Arc::clone(m)),
        }
    }
}

impl Sink {
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => {
                out.write_all(bytes).await?;
                out.flush().await
            }
            // Each write is whole lines: the prompt prints them when one ends
            // in '\n' (a flush would print an empty line).
            Sink::Prompt(w) => futures_util::AsyncWriteExt::write_all(&mut w.0, bytes).await,
            #[cfg(test)]
            Sink::Memory(m) => {
                m.lock().unwrap().extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// Pings sent and not yet answered, to show `/ping`'s round trip and hide
/// the answers to `--ping-interval`'s.
#[derive(Debug, Default)]
pub(crate) struct Pings {
    asked: VecDeque<(Vec<u8>, Instant)>,
    automatic: usize,
    /// Messages received so far (pipe mode lingers until they stop coming).
    pub(crate) received: u64,
}

impl Pings {
    pub(crate) fn asked(&mut self, data: Vec<u8>) {
        self.asked.push_back((data, Instant::now()));
    }

    pub(crate) fn automatic(&mut self) {
        self.automatic += 1;
    }

    /// `None`: an answer to an automatic ping, not shown. `Some(rtt)`: show
    /// it, with the round trip when it answers a `/ping`.
    fn pong(&mut self, data: &[u8]) -> Option<Option<Duration>> {
        if let Some(i) = self.asked.iter().position(|(d, _)| d == data) {
            let (_, at) = self.asked.remove(i).expect("index from position");
            self.asked.drain(..i);
            return Some(Some(at.elapsed()));
        }
        if data.is_empty() && self.automatic > 0 {
            self.automatic -= 1;
            return None;
        }
        Some(None)
    }
}

/// How the receiving side ended.
#[derive(Debug, Default)]
pub(crate) struct Ended {
    /// The peer's close frame, when one arrived (`Some(None)`: without a status).
    pub(crate) close: Option<Option<CloseFrame>>,
    /// What failed, if anything did.
    pub(crate) error: Option<sockeye::Error>,
    /// Writing to the output failed (stdout closed: `| head -1`).
    pub(crate) output_closed: bool,
}

/// Prints every message as it arrives until the connection ends. Runs in
/// its own task so that output never waits for input, nor input for output.
pub(crate) fn spawn_reader(
    mut reader: Reader,
    mut sink: Sink,
    style: Style,
    pings: Arc<Mutex<Pings>>,
) -> JoinHandle<Ended> {
    tokio::spawn(async move {
        let mut ended = Ended::default();
        while let Some(result) = reader.recv().await {
            let message = match result {
                Ok(message) => message,
                Err(e) => {
                    // The next recv ends the stream.
                    ended.error.get_or_insert(e);
                    continue;
                }
            };
            let rtt = match &message {
                Message::Pong(data) => match lock(&pings).pong(data) {
                    Some(rtt) => rtt,
                    None => continue,
                },
                Message::Close(frame) => {
                    ended.close = Some(frame.clone());
                    None
                }
                _ => {
                    lock(&pings).received += 1;
                    None
                }
            };
            if let Some(bytes) = style.incoming(&message, rtt) {
                if sink.write(&bytes).await.is_err() {
                    ended.output_closed = true;
                    break;
                }
            }
        }
        ended
    })
}

pub(crate) fn lock(pings: &Mutex<Pings>) -> std::sync::MutexGuard<'_, Pings> {
    pings
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A ticker for `--ping-interval`; its first tick is one period away.
pub(crate) fn ticker(period: Option<Duration>) -> Option<Interval> {
    period
        .filter(|p| !p.is_zero())
        .map(|p| tokio::time::interval_at(Instant::now() + p, p))
}

/// Waits for the next tick, or forever without a ticker.
pub(crate) async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sends `frame`, then waits for the close handshake to finish (the
/// reader sees the end) for at most the close timeout and a second.
pub(crate) async fn close_and_wait(
    writer: &mut Writer,
    reader: JoinHandle<Ended>,
    frame: CloseFrame,
    close_timeout: Duration,
) -> Option<Ended> {
    let _ = writer.close(Some(frame)).await;
    let bound = close_timeout + Duration::from_secs(1);
    match tokio::time::timeout(bound, reader).await {
        Ok(Ok(ended)) => Some(ended),
        _ => None,
    }
}

/// The session's result: fine unless the peer closed with a code other
/// than 1000 (or the one we sent), or the connection failed before we closed.
pub(crate) fn finish(ended: Option<Ended>, sent: Option<CloseCode>) -> Result<(), Failure> {
    let Some(ended) = ended else {
        // We closed and the peer never finished the handshake: still closed.
        return Ok(());
    };
    if let Some(failure) = peer_close(ended.close.as_ref().and_then(Option::as_ref), sent) {
        return Err(failure);
    }
    match ended.error {
        // Once we asked to close, a connection that drops is closed all the same.
        Some(_) if sent.is_some() => Ok(()),
        Some(error) if ended.close.is_none() => Err(session_failure(&error)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pongs_answer_pings_in_order_and_automatic_ones_are_hidden() {
        let mut pings = Pings::default();
        pings.automatic();
        pings.asked(b"a".to_vec());
        assert_eq!(pings.pong(b""), None);
        assert!(matches!(pings.pong(b"a"), Some(Some(_))));
        assert_eq!(pings.pong(b"unsolicited"), Some(None));
        assert_eq!(pings.pong(b""), Some(None));
    }

    #[test]
    fn finish_reports_the_peers_close() {
        let closed = |code: u16| Ended {
            close: Some(Some(CloseFrame::new(CloseCode(code), "why"))),
            ..Ended::default()
        };
        assert!(finish(Some(closed(1000)), None).is_ok());
        assert_eq!(
            finish(Some(closed(1008)), None).unwrap_err().exit,
            super::super::exit::Exit::ClosedByPeer
        );
        assert!(finish(Some(closed(4000)), Some(CloseCode(4000))).is_ok());
        let dropped = Ended {
            error: Some(sockeye::Error::AbnormalClosure),
            ..Ended::default()
        };
        assert_eq!(
            finish(Some(dropped), None).unwrap_err().exit,
            super::super::exit::Exit::ClosedByPeer
        );
        assert!(finish(None, Some(CloseCode::NORMAL)).is_ok());
    }
}
