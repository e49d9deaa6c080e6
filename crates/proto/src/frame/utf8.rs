//! UTF-8 for text messages and close reasons: an incremental validator that
//! fails as soon as an invalid sequence is seen, and [`Utf8Bytes`], bytes known
//! to be valid UTF-8. Validation is simdutf8's.

use bytes::Bytes;

use crate::error::Error;

/// Validates a text message fed in pieces of any size.
///
/// A piece may end in the middle of a character; the up to three bytes of it
/// are carried over to the next piece. An invalid sequence is reported by the
/// `feed` call that sees it, not at the end of the message.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: usize,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece of the message.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Error> {
        if self.partial_len > 0 {
            let take = data.len().min(4 - self.partial_len);
            let mut joined = [0u8; 8];
            joined[..self.partial_len].copy_from_slice(&self.partial[..self.partial_len]);
            joined[self.partial_len..self.partial_len + take].copy_from_slice(&data[..take]);
            let joined = &joined[..self.partial_len + take];
            match simdutf8::compat::from_utf8(joined) {
                Ok(_) => {
                    data = &data[take..];
                    self.partial_len = 0;
                }
                Err(e) if e.error_len().is_some() => return Err(Error::InvalidUtf8),
                Err(e) if e.valid_up_to() >= self.partial_len => {
                    // The carried character is complete; resume right after it.
                    data = &data[e.valid_up_to() - self.partial_len..];
                    self.partial_len = 0;
                }
                Err(_) => {
                    // Still incomplete: everything fed so far is the start of one character.
                    self.partial[..joined.len()].copy_from_slice(joined);
                    self.partial_len = joined.len();
                    return Ok(());
                }
            }
        }
        match simdutf8::compat::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Error::InvalidUtf8),
            Err(e) => {
                let tail = &data[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len();
                Ok(())
            }
        }
    }

    /// Ends the message: an unfinished character is an error. Resets the validator.
    pub fn finish(&mut self) -> Result<(), Error> {
        let incomplete = self.partial_len > 0;
        self.partial_len = 0;
        if incomplete {
            Err(Error::InvalidUtf8)
        } else {
            Ok(())
        }
    }

    /// Forgets any carried bytes.
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }
}

/// Bytes that are valid UTF-8: the payload of a text message, shared without a copy.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps bytes already checked as UTF-8 by this crate.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        Utf8Bytes(bytes)
    }

    /// An empty string.
    pub const fn new() -> Self {
        Utf8Bytes(Bytes::new())
    }

    /// Wraps a static string without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    ///
    /// The bytes were validated when this value was made; they are checked
    /// again here (at simdutf8's speed) because this crate forbids `unsafe`.
    pub fn as_str(&self) -> &str {
        simdutf8::basic::from_utf8(&self.0).unwrap_or_default()
    }

    /// The bytes of the text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying shared bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Error;

    fn try_from(bytes: Bytes) -> Result<Self, Error> {
        simdutf8::basic::from_utf8(&bytes).map_err(|_| Error::InvalidUtf8)?;
        Ok(Utf8Bytes(bytes))
    }
}

impl TryFrom<Vec<u8>> for Utf8Bytes {
    type Error = Error;

    fn try_from(bytes: Vec<u8>) -> Result<Self, Error> {
        Utf8Bytes::try_from(Bytes::from(bytes))
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(s: Utf8Bytes) -> Self {
        s.0
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl std::fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(data: &[u8], split: usize) -> Result<(), Error> {
        let mut v = Utf8Validator::new();
        for chunk in data.chunks(split.max(1)) {
            v.feed(chunk)?;
        }
        v.finish()
    }

    #[test]
    fn agrees_with_std_for_every_chunking() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf0\x90\x80\x80",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\xed\x9f\xbf",
            b"\xef\xbf\xbf",
            b"\xe0\x80",
            b"abc\xf0\x9f\x98",
        ];
        for sample in samples {
            let expected = std::str::from_utf8(sample).is_ok();
            for split in 1..=sample.len() {
                assert_eq!(
                    feed_split(sample, split).is_ok(),
                    expected,
                    "{sample:?} / {split}"
                );
            }
        }
    }

    #[test]
    fn fails_fast_on_an_impossible_prefix() {
        // 0xF4 0x90 can never start a valid character: the second piece is refused
        // at once, before the rest of the message arrives.
        let mut v = Utf8Validator::new();
        v.feed(b"ok \xf4").unwrap();
        assert_eq!(v.feed(b"\x90"), Err(Error::InvalidUtf8));
    }

    #[test]
    fn unfinished_character_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(Error::InvalidUtf8));
        v.feed(b"ok").unwrap();
        v.finish().unwrap();
    }
}
