//! `sockeye connect URL`: the command-line client (as wscat and websocat).
//!
//! ```text
//!  ConnectArgs ─resolve─► Settings ─► sockeye::connect_with ─┬─► repl (a terminal on both ends)
//!      (args.rs)                     (proxy, TLS, handshake)  └─► pipe (stdin lines / -x)
//!      --reconnect ─► reconnect (sockeye::ReconnectingClient, same prompt and pipe)
//!                                          │ errors
//!                                          └─► exit.rs: one message, one exit code
//! ```

mod args;
mod command;
mod exit;
mod output;
mod pipe;
mod reconnect;
mod repl;
mod session;

use std::io::IsTerminal;

pub(crate) use args::ConnectArgs;

use args::{Mode, Settings};
use exit::Failure;

/// Runs `sockeye connect`; returns the exit code (see `--help`). The caller
/// exits the process with it rather than dropping the runtime: a blocking
/// read of stdin may still be in progress, and would hold the runtime up.
pub(crate) async fn run(args: ConnectArgs) -> i32 {
    let result = match args.resolve() {
        Ok(settings) => {
            let color = settings.color && std::io::stderr().is_terminal();
            connect(settings).await.map_err(|f| (f, color))
        }
        Err(failure) => Err((failure, false)),
    };
    match result {
        Ok(()) => exit::Exit::Ok.code(),
        Err((failure, color)) => {
            eprintln!("{} {}", output::error_prefix(color), failure.message);
            if let Some(detail) = &failure.detail {
                eprintln!("{detail}");
            }
            failure.exit.code()
        }
    }
}

async fn connect(settings: Settings) -> Result<(), Failure> {
    if settings.reconnect {
        return reconnect::run(&settings).await;
    }
    let proxy = settings.config.proxy.as_ref().map(ToString::to_string);
    let (ws, response) = match sockeye::connect_with(&settings.url, &settings.config).await {
        Ok(connected) => connected,
        Err(error) => {
            if let (true, sockeye::Error::Refused { response, .. }) =
                (settings.show_headers, &error)
            {
                eprint!("{}", head(response));
            }
            return Err(exit::connect_failure(
                &error,
                &settings.target,
                proxy.as_deref(),
            ));
        }
    };
    if settings.show_headers {
        eprint!("{}", head(&response));
    }
    match settings.mode {
        Mode::Interactive => repl::run(ws, &response, &settings).await,
        Mode::Pipe | Mode::Execute { .. } => pipe::run(ws, &settings).await,
    }
}

/// A response head as it came on the wire (header names in lower case).
pub(crate) fn head(response: &http::Response<()>) -> String {
    let mut text = format!("{:?} {}\n", response.version(), response.status());
    for (name, value) in response.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text.push('\n');
    text
}
