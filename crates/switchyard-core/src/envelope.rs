//! Reads a text message only as far as routing needs: its `type` and a few ids.
//!
//! Every other field is skipped without being allocated; the relay forwards the
//! original bytes, so nothing here is ever serialized again.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The routing-relevant fields of a client message.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub kind: Cow<'a, str>,
    /// The first `clientId` a client sends names it, when the app gave none.
    pub client_id: Option<Cow<'a, str>>,
    /// The raw JSON of `id`, echoed back in replies such as `pong`.
    pub id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "clientId", borrow, default)]
    client_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// Why a text frame is not a protocol message.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl<'a> Envelope<'a> {
    /// Parses a JSON object with a string `type`. Anything else is [`Malformed`].
    pub fn parse(text: &'a [u8]) -> Result<Self, Malformed> {
        let wire: Wire<'a> = serde_json::from_slice(text).map_err(|_| Malformed)?;
        let client_id = wire
            .client_id
            .and_then(|raw| serde_json::from_str::<Cow<'a, str>>(raw.get()).ok())
            .filter(|id| !id.is_empty());
        Ok(Self { kind: wire.kind, client_id, id: wire.id })
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
    }

    #[test]
    fn a_non_string_client_id_is_ignored() {
        let env = Envelope::parse(br#"{"type":"a","clientId":5}"#).unwrap();
        assert!(env.client_id.is_none());
    }

    #[test]
    fn refuses_what_is_not_a_typed_object() {
        for bad in [&b"not json"[..], b"[1,2]", b"\"str\"", b"{}", br#"{"type":5}"#, br#"{"type":"a""#, b""] {
            assert_eq!(Envelope::parse(bad).unwrap_err(), Malformed, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn escaped_types_are_unescaped() {
        let env = Envelope::parse(br#"{"type":"a\u0062"}"#).unwrap();
        assert_eq!(env.kind, "ab");
    }
}
