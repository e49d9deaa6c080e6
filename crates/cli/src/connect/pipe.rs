//! Pipe mode (stdin lines in, messages out, as websocat) and `-x`.

use std::sync::Arc;

use bytes::Bytes;
use sockeye::{CloseCode, CloseFrame, MaybeTlsStream, Message, WebSocket};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::args::{Mode, Settings};
use super::exit::{Exit, Failure};
use super::output::Style;
use super::session::{close_and_wait, finish, spawn_reader, tick, ticker, Ended, Sink, Writer};

/// After stdin ends, how long no message must arrive before pipe mode closes.
const LINGER: std::time::Duration = std::time::Duration::from_millis(300);

/// Runs pipe mode or `-x` on an open connection, until stdin ends (or the
/// wait is over), then closes with 1000.
pub(crate) async fn run(ws: WebSocket<MaybeTlsStream>, settings: &Settings) -> Result<(), Failure> {
    let style = Style {
        interactive: false,
        color: false,
        json: settings.json,
        raw_binary: settings.binary,
    };
    let close_timeout = settings.config.protocol.close_timeout;
    let (reader, mut writer) = ws.split();
    let shared: Arc<std::sync::Mutex<super::session::Pings>> = Arc::default();
    let mut reader = spawn_reader(
        reader,
        Sink::Stdout(tokio::io::stdout()),
        style,
        Arc::clone(&shared),
    );
    let mut pings = ticker(settings.ping_interval);

    match &settings.mode {
        Mode::Execute { messages, wait } => {
            for text in messages {
                let message = if settings.binary {
                    Message::binary(Bytes::copy_from_slice(text.as_bytes()))
                } else {
                    Message::text(text.as_str())
                };
                if writer.send(message).await.is_err() {
                    break;
                }
            }
            let done = tokio::time::sleep(*wait);
            tokio::pin!(done);
            loop {
                tokio::select! {
                    _ = &mut done => break,
                    ended = &mut reader => return reader_ended(ended.ok(), &mut writer).await,
                    _ = tick(&mut pings) => ping(&mut writer).await,
                }
            }
        }
        _ if settings.binary => {
            let read_all = async {
                let mut data = Vec::new();
                tokio::io::stdin()
                    .read_to_end(&mut data)
                    .await
                    .map(|_| data)
            };
            tokio::pin!(read_all);
            let data = loop {
                tokio::select! {
                    data = &mut read_all => break data.map_err(stdin_failed)?,
                    ended = &mut reader => return reader_ended(ended.ok(), &mut writer).await,
                    _ = tick(&mut pings) => ping(&mut writer).await,
                }
            };
            if !data.is_empty() {
                let _ = writer.send(Message::binary(data)).await;
            }
        }
        _ => {
            let mut lines = BufReader::new(tokio::io::stdin()).split(b'\n');
            loop {
                tokio::select! {
                    line = lines.next_segment() => match line.map_err(stdin_failed)? {
                        Some(line) => {
                            if writer.send(line_message(line)).await.is_err() {
                                // The reader tells why.
                                break;
                            }
                        }
                        None => break,
                    },
                    ended = &mut reader => return reader_ended(ended.ok(), &mut writer).await,
                    _ = tick(&mut pings) => ping(&mut writer).await,
                }
            }
        }
    }
    if !matches!(settings.mode, Mode::Execute { .. }) {
        // Input ended: keep printing replies until none has come for a
        // moment, since a server may answer our close before its echoes.
        let deadline = tokio::time::Instant::now() + close_timeout;
        loop {
            let before = super::session::lock(&shared).received;
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => {
                    if super::session::lock(&shared).received == before || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
                ended = &mut reader => return reader_ended(ended.ok(), &mut writer).await,
            }
        }
    }
    let frame = CloseFrame::new(CloseCode::NORMAL, "");
    let ended = close_and_wait(&mut writer, reader, frame, close_timeout).await;
    finish(ended, Some(CloseCode::NORMAL))
}

/// The receiving side ended first: the peer closed, the connection failed,
/// or stdout was closed (`| head -1`), in which case we close politely.
async fn reader_ended(ended: Option<Ended>, writer: &mut Writer) -> Result<(), Failure> {
    if ended.as_ref().is_some_and(|e| e.output_closed) {
        let _ = writer
            .close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
            .await;
    }
    finish(ended, None)
}

async fn ping(writer: &mut Writer) {
    let _ = writer.send(Message::Ping(Bytes::new())).await;
}

fn stdin_failed(e: std::io::Error) -> Failure {
    Failure::new(Exit::Other, format!("cannot read stdin: {e}"))
}

/// A line without its line ending: text, or binary when it is not UTF-8.
pub(crate) fn line_message(mut line: Vec<u8>) -> Message {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    match String::from_utf8(line) {
        Ok(text) => Message::text(text),
        Err(e) => Message::binary(e.into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_text_unless_they_are_not_utf8() {
        assert_eq!(line_message(b"hi\r".to_vec()), Message::text("hi"));
        assert_eq!(line_message(b"".to_vec()), Message::text(""));
        assert_eq!(
            line_message(vec![0xff, 0x00]),
            Message::binary(vec![0xff, 0x00])
        );
    }
}
