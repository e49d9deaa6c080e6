//! What a line typed at the prompt means.

use std::path::PathBuf;

use sockeye::{CloseCode, CloseFrame};

use super::output::parse_hex;

/// The prompt's help text.
pub(crate) const HELP: &str = "\
commands:
  <text>                   send a text message (binary with --binary)
  /ping [data]             send a ping; its pong shows the round trip
  /close [code [reason]]   close (default 1000) and exit
  /binary <hex>|@<file>    send a binary message: hex digits, or a file's bytes
  /quit                    close with 1000 and exit (also Ctrl-D, Ctrl-C)
  /help                    this
  //text                   send a line that starts with '/'";

/// A parsed prompt line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Send this line as a message.
    Send(String),
    Ping(Vec<u8>),
    Close(CloseFrame),
    Binary(Vec<u8>),
    BinaryFile(PathBuf),
    Help,
    Quit,
}

/// Parses one line. An error is a message for the user; nothing is sent.
pub(crate) fn parse(line: &str) -> Result<Command, String> {
    if let Some(escaped) = line.strip_prefix("//") {
        return Ok(Command::Send(format!("/{escaped}")));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Command::Send(line.to_string()));
    };
    let (name, rest) = command
        .split_once(char::is_whitespace)
        .map_or((command, ""), |(n, r)| (n, r.trim_start()));
    match name {
        "ping" => {
            if rest.len() > 125 {
                return Err("a ping carries at most 125 bytes".into());
            }
            Ok(Command::Ping(rest.as_bytes().to_vec()))
        }
        "close" => parse_close(rest).map(Command::Close),
        "binary" => {
            if let Some(path) = rest.strip_prefix('@') {
                if path.is_empty() {
                    return Err("usage: /binary @<file>".into());
                }
                Ok(Command::BinaryFile(PathBuf::from(path)))
            } else if rest.is_empty() {
                Err("usage: /binary <hex> or /binary @<file>".into())
            } else {
                parse_hex(rest)
                    .map(Command::Binary)
                    .map_err(|e| format!("/binary: {e}"))
            }
        }
        "quit" | "exit" | "q" => Ok(Command::Quit),
        "help" | "h" | "?" => Ok(Command::Help),
        _ => Err(format!(
            "unknown command /{name}; /help lists them (start a line with // to send it as text)"
        )),
    }
}

fn parse_close(args: &str) -> Result<CloseFrame, String> {
    let (code, reason) = args
        .split_once(char::is_whitespace)
        .map_or((args, ""), |(c, r)| (c, r.trim()));
    if code.is_empty() {
        return Ok(CloseFrame::new(CloseCode::NORMAL, ""));
    }
    let code: u16 = code
        .parse()
        .map_err(|_| format!("{code:?} is not a close code (1000, 4000…)"))?;
    let code = CloseCode(code);
    if !code.is_sendable() {
        return Err(format!(
            "{code} cannot be sent; use 1000-1003, 1007-1014 or 3000-4999"
        ));
    }
    if reason.len() > sockeye::proto::frame::MAX_REASON_LEN {
        return Err("a close reason is 123 bytes at most".into());
    }
    Ok(CloseFrame::new(code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_escapes() {
        assert_eq!(parse("hello"), Ok(Command::Send("hello".into())));
        assert_eq!(
            parse("//etc/passwd"),
            Ok(Command::Send("/etc/passwd".into()))
        );
        assert_eq!(parse(""), Ok(Command::Send("".into())));
        assert!(parse("/nope")
            .unwrap_err()
            .contains("unknown command /nope"));
    }

    #[test]
    fn ping_close_binary() {
        assert_eq!(parse("/ping"), Ok(Command::Ping(vec![])));
        assert_eq!(
            parse("/ping hi there"),
            Ok(Command::Ping(b"hi there".to_vec()))
        );
        assert_eq!(
            parse("/close"),
            Ok(Command::Close(CloseFrame::new(CloseCode::NORMAL, "")))
        );
        assert_eq!(
            parse("/close 4000 see you later"),
            Ok(Command::Close(CloseFrame::new(
                CloseCode(4000),
                "see you later"
            )))
        );
        assert!(parse("/close 1005").is_err());
        assert!(parse("/close soon").is_err());
        assert_eq!(parse("/binary 00 ff"), Ok(Command::Binary(vec![0, 255])));
        assert_eq!(
            parse("/binary @data.bin"),
            Ok(Command::BinaryFile("data.bin".into()))
        );
        assert!(parse("/binary").is_err());
        assert!(parse("/binary xyz").is_err());
        assert_eq!(parse("/quit"), Ok(Command::Quit));
        assert_eq!(parse("/help"), Ok(Command::Help));
    }
}
