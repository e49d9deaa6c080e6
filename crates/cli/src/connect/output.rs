//! How messages look: one per line in pipe mode, marked and coloured at the
//! prompt; hex for binary, pretty JSON with `--json`.

use std::time::Duration;

use sockeye::Message;

use super::exit::describe_close;

/// Hex shown at the prompt for one binary message, at most.
const SHOW_BINARY: usize = 1024;

/// How received messages are written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    /// At the prompt: `<` marks, control frames shown, colours when `color`.
    pub(crate) interactive: bool,
    pub(crate) color: bool,
    /// Pretty-print text messages that parse as JSON.
    pub(crate) json: bool,
    /// Pipe mode: write binary messages as they are instead of as hex.
    pub(crate) raw_binary: bool,
}

const GREEN: &str = "\x1b[32m";
const CYAN: &str = "\x1b[36m";
const BLUE: &str = "\x1b[34m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

impl Style {
    fn paint(&self, color: &str, text: &str) -> String {
        if self.color {
            format!("{color}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// The bytes to write for a received message, or `None` when this mode
    /// does not show it (control frames in pipe mode). `pong_rtt` is the
    /// round trip of a `/ping` this pong answers.
    pub(crate) fn incoming(
        &self,
        message: &Message,
        pong_rtt: Option<Duration>,
    ) -> Option<Vec<u8>> {
        if !self.interactive {
            return match message {
                Message::Text(text) => {
                    let mut out = self.text(text.as_str()).into_bytes();
                    out.push(b'\n');
                    Some(out)
                }
                Message::Binary(data) if self.raw_binary => Some(data.to_vec()),
                Message::Binary(data) => Some(format!("{}\n", hex(data)).into_bytes()),
                _ => None,
            };
        }
        let mark = self.paint(&format!("{BOLD}{GREEN}"), "<");
        let line = match message {
            Message::Text(text) => indent(&format!("{mark} {}", self.text(text.as_str()))),
            Message::Binary(data) => format!(
                "{mark} {} {}",
                self.paint(CYAN, &format!("[binary, {} bytes]", data.len())),
                shown_hex(data)
            ),
            Message::Ping(data) => format!(
                "{mark} {}",
                self.paint(DIM, &format!("[ping] {}", control_payload(data)))
            ),
            Message::Pong(data) => {
                let rtt = pong_rtt.map(|d| format!(" ({:.1} ms)", d.as_secs_f64() * 1000.0));
                let text = format!(
                    "[pong] {}{}",
                    control_payload(data),
                    rtt.unwrap_or_default()
                );
                format!("{mark} {}", self.paint(DIM, text.trim_end()))
            }
            Message::Close(frame) => {
                let text = match frame {
                    Some(frame) => format!("[close] {}", describe_close(frame)),
                    None => "[close] (no status)".to_string(),
                };
                format!("{mark} {}", self.paint(DIM, &text))
            }
        };
        Some(format!("{line}\n").into_bytes())
    }

    /// The prompt: `> `, the mark of what is sent.
    pub(crate) fn prompt(&self) -> String {
        format!("{} ", self.paint(&format!("{BOLD}{BLUE}"), ">"))
    }

    /// A note at the prompt (connected, sent a ping, closing).
    pub(crate) fn note(&self, text: &str) -> Vec<u8> {
        format!("{}\n", self.paint(DIM, text)).into_bytes()
    }

    /// An error at the prompt.
    pub(crate) fn error(&self, text: &str) -> Vec<u8> {
        format!("{} {text}\n", self.paint(&format!("{BOLD}{RED}"), "error:")).into_bytes()
    }

    fn text(&self, text: &str) -> String {
        if self.json {
            if let Some(pretty) = pretty_json(text) {
                return pretty;
            }
        }
        text.to_string()
    }
}

/// `error:` for stderr, red when `color`.
pub(crate) fn error_prefix(color: bool) -> String {
    if color {
        format!("{BOLD}{RED}error:{RESET}")
    } else {
        "error:".to_string()
    }
}

/// Continuation lines of a multi-line message line up under its first.
fn indent(text: &str) -> String {
    text.replace('\n', "\n  ")
}

/// A ping or pong payload: as text when it is, else hex.
fn control_payload(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) => text.to_string(),
        Err(_) => hex(data),
    }
}

fn shown_hex(data: &[u8]) -> String {
    if data.len() <= SHOW_BINARY {
        hex(data)
    } else {
        format!(
            "{}… ({} more bytes)",
            hex(&data[..SHOW_BINARY]),
            data.len() - SHOW_BINARY
        )
    }
}

/// Pretty JSON, or `None` when `text` is not a JSON object or array.
/// (A bare number or string is left as it came.)
pub(crate) fn pretty_json(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if !(value.is_object() || value.is_array()) {
        return None;
    }
    serde_json::to_string_pretty(&value).ok()
}

/// Lower-case hex, two digits a byte.
pub(crate) fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(data.len() * 2);
    for byte in data {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
    out
}

/// Hex digits, spaces and an optional `0x` ignored.
pub(crate) fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .trim()
        .trim_start_matches("0x")
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if digits.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).map_err(|_| "not hex".to_string())?;
            u8::from_str_radix(pair, 16).map_err(|_| format!("{pair:?} is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockeye::{CloseCode, CloseFrame};

    const PIPE: Style = Style {
        interactive: false,
        color: false,
        json: false,
        raw_binary: false,
    };
    const PROMPT: Style = Style {
        interactive: true,
        ..PIPE
    };

    fn shown(style: Style, message: Message) -> Option<String> {
        style
            .incoming(&message, None)
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn pipe_mode_writes_one_message_a_line() {
        assert_eq!(shown(PIPE, Message::text("hi")).unwrap(), "hi\n");
        assert_eq!(
            shown(PIPE, Message::binary(vec![0, 255])).unwrap(),
            "00ff\n"
        );
        let raw = Style {
            raw_binary: true,
            ..PIPE
        };
        assert_eq!(
            raw.incoming(&Message::binary(vec![0, 255]), None).unwrap(),
            [0, 255]
        );
        assert_eq!(shown(PIPE, Message::Ping(Default::default())), None);
        assert_eq!(shown(PIPE, Message::Close(None)), None);
    }

    #[test]
    fn the_prompt_marks_and_describes() {
        assert_eq!(shown(PROMPT, Message::text("a\nb")).unwrap(), "< a\n  b\n");
        assert_eq!(
            shown(PROMPT, Message::binary(b"hi".to_vec())).unwrap(),
            "< [binary, 2 bytes] 6869\n"
        );
        let close = Message::Close(Some(CloseFrame::new(CloseCode::POLICY, "bye")));
        assert_eq!(
            shown(PROMPT, close).unwrap(),
            "< [close] 1008 (policy violation): bye\n"
        );
        let pong = PROMPT.incoming(
            &Message::Pong("x".into()),
            Some(Duration::from_micros(1500)),
        );
        assert_eq!(
            String::from_utf8(pong.unwrap()).unwrap(),
            "< [pong] x (1.5 ms)\n"
        );
        let colored = Style {
            color: true,
            ..PROMPT
        };
        assert!(shown(colored, Message::text("hi"))
            .unwrap()
            .contains("\x1b[32m<\x1b[0m hi"));
    }

    #[test]
    fn json_is_pretty_printed_when_asked() {
        let json = Style { json: true, ..PIPE };
        assert_eq!(
            shown(json, Message::text(r#"{"a":[1,2]}"#)).unwrap(),
            "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n"
        );
        assert_eq!(
            shown(json, Message::text("not json")).unwrap(),
            "not json\n"
        );
        assert_eq!(shown(json, Message::text("42")).unwrap(), "42\n");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(b"\x00\x10\xab"), "0010ab");
        assert_eq!(parse_hex("0x00 10 AB").unwrap(), b"\x00\x10\xab");
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
