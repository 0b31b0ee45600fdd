//! Reads a text message only as far as routing needs: its `type`, its channel, the ids
//! that replies carry, and the payload of the messages the relay itself handles.
//!
//! Every other field is skipped without being allocated; the relay forwards the
//! original bytes, so nothing here is ever serialized again.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{ErrorCode, MessageRejection};

/// The routing-relevant fields of a client message.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The message's `type`, which decides how the relay handles it.
    pub kind: Cow<'a, str>,
    /// The first `clientId` a client sends names it, when the app gave none.
    pub client_id: Option<Cow<'a, str>>,
    /// The raw JSON of `id`, echoed back in replies such as `pong`.
    pub id: Option<&'a RawValue>,
    /// `id` when it is a string: what an acknowledgement correlates with.
    pub correlation_id: Option<Cow<'a, str>>,
    /// `"ack": true`.
    pub ack: bool,
    /// A string `channel`: the message is published there, not to the session.
    pub channel: Option<Cow<'a, str>>,
    /// The raw JSON of a string or number `requestId`.
    pub request_id: Option<&'a RawValue>,
    /// The raw JSON of `payload`: a request's body, or an awareness message's fields.
    pub payload: Option<&'a RawValue>,
    /// The raw JSON of `data`: what a `role_changed` announces.
    pub data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "clientId", borrow, default)]
    client_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    ack: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(rename = "requestId", borrow, default)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// How deeply a message's JSON may nest, the envelope counting as the first level: below
/// serde_json's recursion limit (127 levels), so every message the relay passes on can be
/// parsed again by a recursive parser, with room to wrap it.
pub const MAX_NESTING: usize = 100;

/// Why a text frame is not a protocol message.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Not a JSON object with a string `type`, or a field of the wrong kind.
    Shape,
    /// Arrays and objects nested deeper than [`MAX_NESTING`].
    TooDeep,
}

impl From<Malformed> for MessageRejection {
    fn from(malformed: Malformed) -> Self {
        match malformed {
            Malformed::Shape => ErrorCode::InvalidMessage.into(),
            Malformed::TooDeep => MessageRejection::new(ErrorCode::InvalidMessage, format!("JSON nested deeper than {MAX_NESTING} levels")),
        }
    }
}

/// Whether JSON nests arrays and objects deeper than `limit`. serde_json keeps the fields
/// the relay passes on raw without counting their depth, so this counts it, before
/// parsing, so that any too deep message gets the same answer.
fn nests_deeper_than(json: &[u8], limit: usize) -> bool {
    // Nesting deeper than `limit` takes more than `limit` opening brackets. Looking for
    // them is a SIMD search; the byte-by-byte walk below, several times slower (it was half
    // of the relay's time on 16 KiB messages), is for the rare text that has that many.
    if json.len() <= limit || memchr::memchr2_iter(b'{', b'[', json).nth(limit).is_none() {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A JSON string's contents, when `raw` is a string.
fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
}

impl<'a> Envelope<'a> {
    /// Parses a JSON object with a string `type`, a `channel` that is a string if present,
    /// and a `requestId` that is a string or a number if present, nested no deeper than
    /// [`MAX_NESTING`]. Anything else is [`Malformed`].
    pub fn parse(text: &'a [u8]) -> Result<Self, Malformed> {
        if nests_deeper_than(text, MAX_NESTING) {
            return Err(Malformed::TooDeep);
        }
        let wire: Wire<'a> = serde_json::from_slice(text).map_err(|_| Malformed::Shape)?;
        let client_id = wire.client_id.and_then(as_str).filter(|id| !id.is_empty());
        let channel = match wire.channel {
            None => None,
            Some(raw) if raw.get() == "null" => None,
            Some(raw) => Some(as_str(raw).ok_or(Malformed::Shape)?),
        };
        let request_id = match wire.request_id {
            Some(raw) if raw.get().starts_with('"') || raw.get().starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
                Some(raw)
            }
            Some(_) => return Err(Malformed::Shape),
            None => None,
        };
        Ok(Self {
            kind: wire.kind,
            client_id,
            correlation_id: wire.id.and_then(as_str),
            id: wire.id,
            ack: wire.ack.is_some_and(|raw| raw.get() == "true"),
            channel,
            request_id,
            payload: wire.payload,
            data: wire.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_type_and_ids() {
        let env = Envelope::parse(br#"{"type":"cursor","clientId":"alice","id":7,"x":[1,2,{"y":3}]}"#).unwrap();
        assert_eq!(env.kind, "cursor");
        assert_eq!(env.client_id.as_deref(), Some("alice"));
        assert_eq!(env.id.map(RawValue::get), Some("7"));
        assert_eq!(env.correlation_id, None, "only a string id correlates");
        assert!(!env.ack);
    }

    #[test]
    fn reads_channel_ack_request_and_payload() {
        let env = Envelope::parse(
            br#"{"type":"chat","channel":"room:1","id":"m1","ack":true,"requestId":42,"payload":{"a":1},"data":[1]}"#,
        )
        .unwrap();
        assert_eq!(env.channel.as_deref(), Some("room:1"));
        assert_eq!(env.correlation_id.as_deref(), Some("m1"));
        assert!(env.ack);
        assert_eq!(env.request_id.map(RawValue::get), Some("42"));
        assert_eq!(env.payload.map(RawValue::get), Some(r#"{"a":1}"#));
        assert_eq!(env.data.map(RawValue::get), Some("[1]"));
    }

    #[test]
    fn a_non_string_client_id_is_ignored() {
        let env = Envelope::parse(br#"{"type":"a","clientId":5}"#).unwrap();
        assert!(env.client_id.is_none());
    }

    #[test]
    fn refuses_what_is_not_a_typed_object() {
        let bad: [&[u8]; 10] = [
            b"not json",
            b"[1,2]",
            b"\"str\"",
            b"{}",
            br#"{"type":5}"#,
            br#"{"type":"a""#,
            b"",
            br#"{"type":"a","channel":5}"#,
            br#"{"type":"a","requestId":{"x":1}}"#,
            br#"{"type":"a","requestId":true}"#,
        ];
        for text in bad {
            assert_eq!(Envelope::parse(text).unwrap_err(), Malformed::Shape, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let nested = |depth: usize, filler: &str| {
            format!(r#"{{"type":"m","s":"{filler}","p":{}{}}}"#, "[{\"a\":".repeat(depth / 2) + &"[".repeat(depth % 2), "]".repeat(depth % 2) + &"}]".repeat(depth / 2))
        };
        let brackets = "[[[[{{{{\\\"[[[[".repeat(40);
        let deepest = nested(MAX_NESTING - 1, &brackets);
        assert!(Envelope::parse(deepest.as_bytes()).is_ok(), "the envelope is the first level");
        assert!(serde_json::from_str::<serde_json::Value>(&deepest).is_ok(), "what is relayed parses again");
        assert_eq!(Envelope::parse(nested(MAX_NESTING, &brackets).as_bytes()).unwrap_err(), Malformed::TooDeep);
    }

    #[test]
    fn escaped_types_are_unescaped() {
        let env = Envelope::parse(br#"{"type":"a\u0062","channel":"c\u0068"}"#).unwrap();
        assert_eq!(env.kind, "ab");
        assert_eq!(env.channel.as_deref(), Some("ch"));
    }
}
