//! What the addon reads of a Node `IncomingMessage`: the method, the URL, the headers the
//! handshake and token auth look at, and the client's address.

use std::net::IpAddr;

use napi::bindgen_prelude::{JsObjectValue, Object, Unknown};
use napi::{Result, ValueType};

const HEADERS: [&str; 10] = [
    "upgrade",
    "last-event-id",
    "content-type",
    "x-switchyard-send",
    "connection",
    "sec-websocket-version",
    "sec-websocket-key",
    "authorization",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
];

pub struct UpgradeRequest {
    /// Checked by the native transport's handshake, which the WebAssembly build lacks.
    #[cfg_attr(target_family = "wasm", allow(dead_code))]
    pub method: String,
    pub url: String,
    headers: Vec<(&'static str, String)>,
    pub address: Option<IpAddr>,
}

fn string(object: &Object, name: &str) -> Option<String> {
    let value: Unknown = object.get_named_property_unchecked(name).ok()?;
    // SAFETY: a string, checked.
    (value.get_type().ok()? == ValueType::String).then(|| unsafe { value.cast::<String>() }.ok()).flatten()
}

impl UpgradeRequest {
    pub fn read(request: &Object) -> Result<Self> {
        let headers: Object = request.get_named_property("headers")?;
        let socket: Option<Object> = request
            .get_named_property_unchecked::<Unknown>("socket")
            .ok()
            .filter(|s| s.get_type().ok() == Some(ValueType::Object))
            // SAFETY: an object, checked by the filter.
            .and_then(|s| unsafe { s.cast() }.ok());
        let address = socket
            .and_then(|s| string(&s, "remoteAddress"))
            .and_then(|a| a.parse::<IpAddr>().ok())
            .map(|a| a.to_canonical());
        Ok(Self {
            method: string(request, "method").unwrap_or_default(),
            url: string(request, "url").unwrap_or_else(|| "/".into()),
            headers: HEADERS.iter().filter_map(|name| string(&headers, name).map(|value| (*name, value))).collect(),
            address,
        })
    }

    /// A header by its lower-case name (one the addon reads).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}
