//! `--reconnect`: the same prompt, pipe mode and `-x`, over
//! [`sockeye::ReconnectingClient`]. What is sent while the connection is
//! down waits in the client's queue; connection changes are noted (above
//! the prompt, or on stderr in pipe mode, keeping stdout for messages).

use std::sync::Mutex;
use std::time::Duration;

use sockeye::{
    CloseCode, CloseFrame, Message, ReconnectConfig, ReconnectEvent, ReconnectingClient,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use super::args::{Mode, Settings};
use super::exit::{connect_failure, peer_close, Exit, Failure};
use super::output::Style;
use super::pipe::line_message;
use super::repl::{banner, interpret, Action, Input, Prompt};
use super::session::{Pings, Sink};

/// Where connection notes go: above the prompt, or stderr.
#[derive(Debug)]
struct Notes {
    prompt: Option<Sink>,
    style: Style,
}

impl Notes {
    async fn note(&mut self, text: &str) {
        match &mut self.prompt {
            Some(sink) => {
                let _ = sink.write(&self.style.note(text)).await;
            }
            None => eprintln!("sockeye: {text}"),
        }
    }
}

/// What the session is fed: prompt lines, or messages read from stdin.
#[derive(Debug)]
enum Feed {
    Prompt(mpsc::Receiver<Input>),
    Stdin(mpsc::Receiver<Message>),
    /// `-x`: nothing more after the messages.
    Nothing,
}

/// Runs a reconnecting session until it is closed (stdin ends, /quit, the
/// `-x` wait is over), the server closes for good, or the client gives up.
pub(crate) async fn run(settings: &Settings) -> Result<(), Failure> {
    let mut config = ReconnectConfig::default().websocket(settings.config.clone());
    if let Some(interval) = settings.ping_interval {
        config = config.heartbeat(interval, interval.max(Duration::from_secs(1)));
    }
    let (client, mut events, driver) = ReconnectingClient::new(settings.url.clone(), config);
    tokio::spawn(driver);

    let interactive = settings.mode == Mode::Interactive;
    let style = Style {
        interactive,
        color: settings.color && interactive,
        json: settings.json,
        raw_binary: settings.binary && !interactive,
    };
    let (prompt, mut feed, mut out) = match &settings.mode {
        Mode::Interactive => {
            let (prompt, input, sink) = Prompt::start(&style)?;
            (Some(prompt), Feed::Prompt(input), sink)
        }
        Mode::Pipe => {
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(read_stdin(tx, settings.binary));
            (None, Feed::Stdin(rx), Sink::Stdout(tokio::io::stdout()))
        }
        Mode::Execute { messages, .. } => {
            for text in messages {
                let message = if settings.binary {
                    Message::binary(text.clone().into_bytes())
                } else {
                    Message::text(text.as_str())
                };
                let _ = client.send(message);
            }
            (None, Feed::Nothing, Sink::Stdout(tokio::io::stdout()))
        }
    };
    let mut notes = Notes {
        prompt: prompt.is_some().then(|| out.clone()),
        style,
    };
    let pings = Mutex::new(Pings::default());
    let execute_wait = match &settings.mode {
        Mode::Execute { wait, .. } => Some(*wait),
        _ => None,
    };
    // -x: the wait starts once connected; closing is bounded too.
    let mut deadline: Option<tokio::time::Instant> = None;
    let close_bound = settings.config.protocol.close_timeout
        + settings.config.handshake_timeout
        + Duration::from_secs(1);
    let mut sent_close: Option<CloseCode> = None;
    let mut connected_once = false;
    let mut last_failure: Option<Failure> = None;
    let mut final_close: Option<CloseFrame> = None;
    let mut gave_up = None;

    loop {
        let close = tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    ReconnectEvent::Connected { attempt, response } => {
                        if settings.show_headers && !connected_once {
                            eprint!("{}", super::head(&response));
                        }
                        let compressed = response
                            .headers()
                            .get("sec-websocket-extensions")
                            .is_some_and(|v| v.as_bytes().starts_with(b"permessage-deflate"));
                        let text = if attempt == 0 && !connected_once {
                            banner(&response, compressed, settings)
                        } else {
                            format!("reconnected to {}", settings.url)
                        };
                        notes.note(&text).await;
                        if !connected_once {
                            if let Some(wait) = execute_wait {
                                deadline = Some(tokio::time::Instant::now() + wait);
                            }
                        }
                        connected_once = true;
                        None
                    }
                    ReconnectEvent::Message(message) => {
                        if let Some(bytes) = style.incoming(&message, None) {
                            if out.write(&bytes).await.is_err() {
                                Some(CloseFrame::new(CloseCode::NORMAL, ""))
                            } else {
                                None
                            }
                        } else {
                            None
                        }
                    }
                    ReconnectEvent::Disconnected { code, reason, reconnect } => {
                        let mut text = format!("disconnected ({code}");
                        if !reason.is_empty() {
                            text.push_str(&format!(": {reason}"));
                        }
                        text.push(')');
                        if reconnect {
                            notes.note(&text).await;
                        } else if sent_close.is_none() {
                            final_close = Some(CloseFrame::new(code, &reason));
                        }
                        None
                    }
                    ReconnectEvent::ConnectFailed { error, .. } => {
                        let proxy = settings.config.proxy.as_ref().map(ToString::to_string);
                        let failure = connect_failure(&error, &settings.target, proxy.as_deref());
                        notes.note(&failure.message).await;
                        last_failure = Some(failure);
                        None
                    }
                    ReconnectEvent::Reconnecting { attempt, delay } => {
                        let text = format!(
                            "reconnecting in {:.1} s (attempt {attempt})",
                            delay.as_secs_f64()
                        );
                        notes.note(&text).await;
                        None
                    }
                    ReconnectEvent::Dropped { reason, message } => {
                        let text = format!("not sent ({reason:?}): a {}-byte message", message.len());
                        notes.note(&text).await;
                        None
                    }
                    ReconnectEvent::GaveUp { attempts } => {
                        gave_up = Some(attempts);
                        None
                    }
                    _ => None,
                }
            }
            input = next_input(&mut feed), if sent_close.is_none() => match input {
                Some(Next::Message(message)) => {
                    send(&client, message, &mut notes).await;
                    None
                }
                Some(Next::Line(line)) => match interpret(&line, settings.binary, &mut out, &style, &pings).await {
                    Action::Send(message) => {
                        send(&client, message, &mut notes).await;
                        None
                    }
                    Action::Close(frame) => Some(frame),
                    Action::Nothing => None,
                },
                Some(Next::Quit) | None => Some(CloseFrame::new(CloseCode::NORMAL, "")),
            },
            _ = sleep_until(deadline) => {
                deadline = None;
                match sent_close {
                    // -x: the wait is over.
                    None => Some(CloseFrame::new(CloseCode::NORMAL, "")),
                    // The close did not finish in time: leave.
                    Some(_) => break,
                }
            }
        };
        if let Some(frame) = close {
            if sent_close.is_none() {
                sent_close = Some(frame.code);
                client.close_with(frame);
                deadline = Some(tokio::time::Instant::now() + close_bound);
            }
        }
    }
    if let Some(prompt) = prompt {
        prompt.stop().await;
    }
    if let Some(attempts) = gave_up {
        return Err(last_failure.unwrap_or_else(|| {
            Failure::new(Exit::Other, format!("gave up after {attempts} attempts"))
        }));
    }
    match final_close {
        Some(frame) if frame.code == CloseCode::NO_STATUS => Ok(()),
        Some(frame) => peer_close(Some(&frame), None).map_or(Ok(()), Err),
        None => Ok(()),
    }
}

/// Queues a message; a refusal is noted.
async fn send(client: &ReconnectingClient, message: Message, notes: &mut Notes) {
    if let Err(e) = client.send(message) {
        notes.note(&format!("not sent: {e}")).await;
    }
}

/// One thing from the feed.
#[derive(Debug)]
enum Next {
    Message(Message),
    Line(String),
    Quit,
}

async fn next_input(feed: &mut Feed) -> Option<Next> {
    match feed {
        Feed::Prompt(input) => Some(match input.recv().await? {
            Input::Line(line) => Next::Line(line),
            Input::Quit => Next::Quit,
        }),
        Feed::Stdin(messages) => messages.recv().await.map(Next::Message),
        Feed::Nothing => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads stdin into messages: a line each, or all of it with `binary`.
/// The channel closes at the end of stdin.
async fn read_stdin(tx: mpsc::Sender<Message>, binary: bool) {
    if binary {
        let mut data = Vec::new();
        if tokio::io::stdin().read_to_end(&mut data).await.is_ok() && !data.is_empty() {
            let _ = tx.send(Message::binary(data)).await;
        }
        return;
    }
    let mut lines = BufReader::new(tokio::io::stdin()).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        if tx.send(line_message(line)).await.is_err() {
            return;
        }
    }
}
