//! Identifiers: session ids chosen by the app or generated, and connection ids.

use std::fmt;
use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};

use crate::error::SessionError;

/// Milliseconds since the Unix epoch, as passed in by the transport.
pub type Millis = u64;

/// The wall clock: the `now` transports pass in. The relay itself never reads it.
pub fn now() -> Millis {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// Longest session id accepted from the app.
const MAX_SESSION_ID_LEN: usize = 128;
/// 22 characters of a 62-letter alphabet carry 130 random bits.
const GENERATED_SESSION_ID_LEN: usize = 22;

/// A session's id: 1 to 128 characters, none of them `/`, `?`, `#`, whitespace or a
/// control character, so that it is one segment of a URL path (the original accepted
/// ids such as `tutorial:intro.step-1`, and apps still make them).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// Checks an id the app chose.
    pub fn parse(id: &str) -> Result<Self, SessionError> {
        if id.is_empty() {
            return Err(SessionError::InvalidId("session id must not be empty".into()));
        }
        let length = id.chars().count();
        if length > MAX_SESSION_ID_LEN {
            return Err(SessionError::InvalidId(format!(
                "session id must be at most {MAX_SESSION_ID_LEN} characters, got {length}"
            )));
        }
        if let Some(bad) = id.chars().find(|c| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c.is_control()) {
            return Err(SessionError::InvalidId(format!(
                "session id may not contain '/', '?', '#', whitespace or control characters, found {bad:?}"
            )));
        }
        Ok(Self(id.into()))
    }

    /// A fresh unguessable id from the thread's CSPRNG.
    pub fn generate() -> Self {
        Self(Alphanumeric.sample_string(&mut rand::rng(), GENERATED_SESSION_ID_LEN).into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

/// A connection's id, unique within one relay. Shown to users as `c_` and base 62.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnId(pub u64);

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl ConnId {
    /// Reads the `c_...` form back, as given to the app in events.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix("c_")?;
        if digits.is_empty() {
            return None;
        }
        digits.bytes().try_fold(0u64, |acc, b| {
            let digit = BASE62.iter().position(|&d| d == b)? as u64;
            acc.checked_mul(62)?.checked_add(digit)
        })
        .map(Self)
    }
}

/// As the app sees it: `c_...`.
impl serde::Serialize for ConnId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 11];
        let mut n = self.0;
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = BASE62[(n % 62) as usize];
            n /= 62;
            if n == 0 {
                break;
            }
        }
        f.write_str("c_")?;
        f.write_str(std::str::from_utf8(&digits[start..]).expect("base62 digits are ASCII"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked() {
        assert!(SessionId::parse("abc_DEF-123").is_ok());
        assert!(SessionId::parse("").is_err());
        assert!(SessionId::parse(&"a".repeat(128)).is_ok());
        assert!(SessionId::parse(&"a".repeat(129)).is_err());
        assert!(SessionId::parse(&"é".repeat(128)).is_ok(), "the limit counts characters, not bytes");
        assert!(SessionId::parse("tutorial:intro.step-1").is_ok());
        assert!(SessionId::parse("user@example.com~1").is_ok());
        for bad in ["a/b", "a?b", "a#b", "a b", "a\tb", "a\u{0}b", "a\u{7f}b", "a\u{2028}b"] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn generated_session_ids_are_valid_and_distinct() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_eq!(a.as_str().len(), 22);
        assert!(SessionId::parse(a.as_str()).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn conn_ids_round_trip() {
        for n in [0, 1, 61, 62, 12345, u64::MAX] {
            let id = ConnId(n);
            assert_eq!(ConnId::parse(&id.to_string()), Some(id));
        }
        assert_eq!(ConnId(62).to_string(), "c_10");
        assert_eq!(ConnId::parse("c_"), None);
        assert_eq!(ConnId::parse("x_1"), None);
        assert_eq!(ConnId::parse("c_zzzzzzzzzzzzzz"), None);
    }
}
