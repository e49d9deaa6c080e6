//! The interactive prompt: line editing and history (rustyline-async),
//! received messages printed above the prompt as they arrive, `/` commands.
//!
//! ```text
//!  terminal ─► prompt task (Readline) ─► Input ─► session ─► WriteHalf ─► server
//!  terminal ◄─ SharedWriter ◄─ reader task ◄─ ReadHalf ◄──────────────────┘
//! ```
//!
//! The session takes its input from a channel and prints to a [`Sink`], so
//! the tests drive it without a terminal.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustyline_async::{Readline, ReadlineEvent};
use sockeye::{CloseCode, CloseFrame, MaybeTlsStream, Message, WebSocket};
use tokio::sync::{mpsc, oneshot};

use super::args::Settings;
use super::command::{self, Command, HELP};
use super::exit::{Exit, Failure};
use super::output::Style;
use super::session::{
    close_and_wait, finish, lock, spawn_reader, tick, ticker, Pings, PromptWriter, Sink,
};

/// What the prompt hands the session.
#[derive(Debug)]
pub(crate) enum Input {
    Line(String),
    /// Ctrl-D, Ctrl-C, or the terminal went away.
    Quit,
}

/// The prompt task on the terminal; [`Prompt::start`] also returns the
/// lines typed and a [`Sink`] whose lines are printed above the prompt.
#[derive(Debug)]
pub(crate) struct Prompt {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Prompt {
    /// Takes the terminal (raw mode) and starts reading lines.
    pub(crate) fn start(style: &Style) -> Result<(Prompt, mpsc::Receiver<Input>, Sink), Failure> {
        let (mut readline, writer) = Readline::new(style.prompt())
            .map_err(|e| Failure::new(Exit::Other, format!("cannot use the terminal: {e}")))?;
        readline.should_print_line_on(true, false);
        let (input_tx, input) = mpsc::channel(16);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(prompt_task(readline, input_tx, stop_rx));
        let sink = Sink::Prompt(PromptWriter(writer));
        Ok((Prompt { stop, task }, input, sink))
    }

    /// Prints what is left and gives the terminal back.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Runs the prompt on the terminal until the connection ends.
pub(crate) async fn run(
    ws: WebSocket<MaybeTlsStream>,
    response: &http::Response<()>,
    settings: &Settings,
) -> Result<(), Failure> {
    let style = Style {
        interactive: true,
        color: settings.color,
        json: settings.json,
        raw_binary: false,
    };
    let (prompt, input, sink) = Prompt::start(&style)?;
    let banner = banner(response, ws.is_compressed(), settings);
    let result = session(ws, input, sink, style, settings, &banner).await;
    prompt.stop().await;
    result
}

/// Reads lines until told to stop; meanwhile the prompt also prints what
/// the sink sends it. Dropping the `Readline` restores the terminal.
async fn prompt_task(
    mut readline: Readline,
    input: mpsc::Sender<Input>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut quit = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = readline.readline() => {
                let event = match event {
                    Ok(ReadlineEvent::Line(line)) => {
                        if !line.trim().is_empty() {
                            readline.add_history_entry(line.clone());
                        }
                        Input::Line(line)
                    }
                    Ok(ReadlineEvent::Eof | ReadlineEvent::Interrupted) => Input::Quit,
                    Err(_) => {
                        let _ = input.send(Input::Quit).await;
                        // The terminal is gone: wait for the session to end.
                        let _ = (&mut stop).await;
                        break;
                    }
                };
                // After a quit, keep printing until the close handshake is done.
                if !quit {
                    quit = matches!(event, Input::Quit);
                    let _ = input.send(event).await;
                }
            }
        }
    }
    let _ = readline.flush();
}

/// The first note: where, and what was negotiated.
pub(crate) fn banner(
    response: &http::Response<()>,
    compressed: bool,
    settings: &Settings,
) -> String {
    let mut extras = Vec::new();
    if let Some(protocol) = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
    {
        extras.push(format!("subprotocol {protocol}"));
    }
    if compressed {
        extras.push("permessage-deflate".to_string());
    }
    let extras = if extras.is_empty() {
        String::new()
    } else {
        format!(" ({})", extras.join(", "))
    };
    format!(
        "connected to {}{extras}; /help for commands, Ctrl-D to quit",
        settings.url
    )
}

/// The prompt's logic, without the terminal: commands from `input`,
/// everything shown written to `sink`.
pub(crate) async fn session(
    ws: WebSocket<MaybeTlsStream>,
    mut input: mpsc::Receiver<Input>,
    sink: Sink,
    style: Style,
    settings: &Settings,
    banner: &str,
) -> Result<(), Failure> {
    let close_timeout = settings.config.protocol.close_timeout;
    let (reader, mut writer) = ws.split();
    let pings = Arc::new(Mutex::new(Pings::default()));
    let mut out = sink.clone();
    let _ = out.write(&style.note(banner)).await;
    let mut reader = spawn_reader(reader, sink, style, Arc::clone(&pings));
    let mut ticker = ticker(settings.ping_interval);

    let close = loop {
        let line = tokio::select! {
            ended = &mut reader => return finish(ended.ok(), None),
            _ = tick(&mut ticker) => {
                lock(&pings).automatic();
                let _ = writer.send(Message::Ping(Bytes::new())).await;
                continue;
            }
            input = input.recv() => match input {
                Some(Input::Line(line)) => line,
                Some(Input::Quit) | None => break CloseFrame::new(CloseCode::NORMAL, ""),
            },
        };
        let message = match interpret(&line, settings.binary, &mut out, &style, &pings).await {
            Action::Send(message) => message,
            Action::Close(frame) => break frame,
            Action::Nothing => continue,
        };
        if let Err(e) = writer.send(message).await {
            let _ = out.write(&style.error(&format!("not sent: {e}"))).await;
        }
    };
    let code = close.code;
    let ended = close_and_wait(&mut writer, reader, close, close_timeout).await;
    finish(ended, Some(code))
}

/// What a prompt line asks for.
#[derive(Debug)]
pub(crate) enum Action {
    Send(Message),
    Close(CloseFrame),
    /// Done already (help shown, an error explained).
    Nothing,
}

/// Turns a prompt line into an action; help and errors are written to `out`.
pub(crate) async fn interpret(
    line: &str,
    binary: bool,
    out: &mut Sink,
    style: &Style,
    pings: &Mutex<Pings>,
) -> Action {
    let message = match command::parse(line) {
        Ok(Command::Send(text)) if binary => Message::binary(text.into_bytes()),
        Ok(Command::Send(text)) => Message::text(text),
        Ok(Command::Ping(data)) => {
            lock(pings).asked(data.clone());
            Message::Ping(data.into())
        }
        Ok(Command::Binary(data)) => Message::binary(data),
        Ok(Command::BinaryFile(path)) => match tokio::fs::read(&path).await {
            Ok(data) => {
                let note = format!("sending {} ({} bytes)", path.display(), data.len());
                let _ = out.write(&style.note(&note)).await;
                Message::binary(data)
            }
            Err(e) => {
                let error = format!("cannot read {}: {e}", path.display());
                let _ = out.write(&style.error(&error)).await;
                return Action::Nothing;
            }
        },
        Ok(Command::Close(frame)) => return Action::Close(frame),
        Ok(Command::Quit) => return Action::Close(CloseFrame::new(CloseCode::NORMAL, "")),
        Ok(Command::Help) => {
            let _ = out.write(&style.note(HELP)).await;
            return Action::Nothing;
        }
        Err(error) => {
            let _ = out.write(&style.error(&error)).await;
            return Action::Nothing;
        }
    };
    Action::Send(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::args::Mode;

    async fn echo_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = sockeye_server::EchoServer::new(sockeye_server::ServeConfig::default());
        tokio::spawn(async move { server.run(listener, std::future::pending()).await });
        addr
    }

    fn settings(url: String) -> Settings {
        Settings {
            target: String::new(),
            url,
            config: sockeye::Config::default(),
            mode: Mode::Interactive,
            binary: false,
            json: false,
            show_headers: false,
            color: false,
            ping_interval: None,
            reconnect: false,
        }
    }

    /// The prompt's commands against a real echo server, with fake input.
    #[tokio::test]
    async fn commands_drive_the_connection() {
        let addr = echo_server().await;
        let settings = settings(format!("ws://{addr}/echo"));
        let (ws, _) = sockeye::connect(&settings.url).await.unwrap();
        let dir = std::env::temp_dir().join(format!("sockeye-repl-{}", std::process::id()));
        std::fs::write(&dir, b"\x01\x02\x03").unwrap();
        let (tx, rx) = mpsc::channel(16);
        for line in [
            "hello",
            "//slash",
            "/ping abc",
            "/binary 00ff",
            &format!("/binary @{}", dir.display()),
            "/bogus",
            "/close 4000 see you",
        ] {
            tx.send(Input::Line(line.to_string())).await.unwrap();
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let style = Style {
            interactive: true,
            color: false,
            json: false,
            raw_binary: false,
        };
        let result = session(ws, rx, Sink::Memory(out.clone()), style, &settings, "hi").await;
        let _ = std::fs::remove_file(&dir);
        assert!(result.is_ok(), "{result:?}");
        let out = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        for expected in [
            "hi\n",
            "< hello\n",
            "< /slash\n",
            "< [pong] abc (",
            "< [binary, 2 bytes] 00ff\n",
            "< [binary, 3 bytes] 010203\n",
            "error: unknown command /bogus",
            "< [close] 4000\n",
        ] {
            assert!(out.contains(expected), "{expected:?} not in:\n{out}");
        }
    }

    /// Ctrl-D closes with 1000 and the session ends cleanly.
    #[tokio::test]
    async fn quit_closes_normally() {
        let addr = echo_server().await;
        let settings = settings(format!("ws://{addr}/echo"));
        let (ws, _) = sockeye::connect(&settings.url).await.unwrap();
        let (tx, rx) = mpsc::channel(1);
        tx.send(Input::Quit).await.unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let style = Style {
            interactive: true,
            color: false,
            json: false,
            raw_binary: false,
        };
        session(ws, rx, Sink::Memory(out.clone()), style, &settings, "")
            .await
            .unwrap();
        let out = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(out.contains("< [close] 1000 (normal closure)"), "{out}");
    }
}
