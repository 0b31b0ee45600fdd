//! JavaScript values as the source of the options users pass
//! ([`switchyard_server::options`] reads them, [`switchyard_server::settings`] makes the
//! relay's settings of them), refused with a `TypeError` that names the option; and the
//! arguments only JavaScript has (functions, Buffers, a route that may be `null`).

use bytes::Bytes;
use napi::bindgen_prelude::{Function, JsObjectValue, Object, Uint8Array, Unknown};
use napi::{Env, Error, JsValue, Result, Status, ValueType};
use serde_json::Value;
use switchyard_core::{schema, Identity, Position, Route, SessionError, SessionOptions};
use switchyard_server::options::{Given, Options, Source};
use switchyard_server::settings::{
    read_history_read, read_identity, read_session_options, read_settings, read_stop, Settings, Stop, IDENTITY_OPTIONS,
};

/// Longest interval a JS timer accepts (2^31 - 1 ms); longer ones fire at once.
pub const MAX_TIMER_MS: u64 = schema::TIMER_MS.max;

/// The options of one call, read from JavaScript.
pub type JsOptions<'env> = Options<Js<'env>>;

/// The JavaScript thread's values, as a source of options.
#[derive(Clone, Copy)]
pub struct Js<'env>(pub &'env Env);

impl<'env> Source for Js<'env> {
    type Object = Object<'env>;
    type Error = Error;

    fn keys(&self, object: &Object<'env>) -> Result<Vec<String>> {
        Object::keys(object)
    }

    fn get(&self, object: &Object<'env>, name: &str) -> Result<Option<Given<Object<'env>>>> {
        given(object.get_named_property_unchecked(name)?)
    }

    fn json(&self, object: &Object<'env>, name: &str) -> Result<Option<Value>> {
        let value: Unknown = object.get_named_property_unchecked(name)?;
        match value.get_type()? {
            ValueType::Undefined => Ok(None),
            _ => json_value(self.0, value, name).map(Some),
        }
    }

    fn refuse(&self, message: String) -> Error {
        type_error(self.0, message)
    }
}

/// A JavaScript value as an option holds it; `None` for `undefined`.
fn given(value: Unknown<'_>) -> Result<Option<Given<Object<'_>>>> {
    // SAFETY (each cast): the value's type was just checked.
    Ok(Some(match value.get_type()? {
        ValueType::Undefined => return Ok(None),
        ValueType::Null => Given::Null,
        ValueType::Boolean => Given::Bool(unsafe { value.cast()? }),
        ValueType::Number => Given::Number(unsafe { value.cast()? }),
        ValueType::String => Given::Text(unsafe { value.cast()? }),
        ValueType::Object if value.is_array()? => {
            let items: Vec<Unknown> = unsafe { value.cast()? };
            Given::List(items.into_iter().map(|item| Ok(given(item)?.unwrap_or(Given::Other("undefined")))).collect::<Result<_>>()?)
        }
        ValueType::Object => Given::Object(unsafe { value.cast()? }),
        ValueType::Function => Given::Function,
        ValueType::BigInt => Given::Other("a bigint"),
        ValueType::Symbol => Given::Other("a symbol"),
        _ => Given::Other("an unknown value"),
    }))
}

fn given_argument(value: Option<Unknown<'_>>) -> Result<Option<Given<Object<'_>>>> {
    Ok(value.map(given).transpose()?.flatten())
}

/// The options object `value` (`undefined` or `null`: none), with only `known` names.
pub fn read_options<'env>(env: &'env Env, value: Option<Unknown<'env>>, what: &str, known: &[&str]) -> Result<JsOptions<'env>> {
    Options::new(Js(env), given_argument(value)?, what, known)
}

/// The manager's config.
pub fn settings(env: &Env, value: Option<Unknown>) -> Result<Settings> {
    read_settings(Js(env), given_argument(value)?)
}

/// `createSession`'s options.
pub fn session_options(env: &Env, value: Option<Unknown>) -> Result<SessionOptions> {
    read_session_options(Js(env), given_argument(value)?)
}

/// `{ since?, limit? }` of `history()` and `channelHistory()`.
pub fn history_read(env: &Env, value: Option<Unknown>) -> Result<(Option<Position>, usize)> {
    read_history_read(Js(env), given_argument(value)?)
}

/// `stop()`'s options.
pub fn stop(env: &Env, value: Option<Unknown>) -> Result<Stop> {
    read_stop(Js(env), given_argument(value)?, MAX_TIMER_MS)
}

/// Throws a JavaScript `TypeError` and returns the error that tells napi it is pending.
pub fn type_error(env: &Env, message: impl AsRef<str>) -> Error {
    match env.throw_type_error(message.as_ref(), None) {
        Ok(()) => Error::from_status(Status::PendingException),
        Err(err) => err,
    }
}

/// What `value` is, for an error message.
fn describe(value: Unknown) -> String {
    given(value).ok().flatten().map_or_else(|| "undefined".into(), |given| given.describe())
}

/// A string argument; anything else is a `TypeError` naming it.
pub fn string_argument(env: &Env, value: Unknown, name: &str) -> Result<String> {
    if value.get_type()? == ValueType::String {
        // SAFETY: a string, checked above.
        return unsafe { value.cast::<String>() };
    }
    Err(type_error(env, format!("{name} must be a string, got {}", describe(value))))
}

/// The raw JavaScript value of option `name`, when given.
fn raw<'env>(options: &JsOptions<'env>, name: &str) -> Result<Option<Unknown<'env>>> {
    let Some(object) = options.object() else { return Ok(None) };
    let value: Unknown<'env> = object.get_named_property_unchecked(name)?;
    Ok((value.get_type()? != ValueType::Undefined).then_some(value))
}

/// Option `name`, a function.
pub fn function<'env>(options: &JsOptions<'env>, name: &str) -> Result<Option<Function<'env, Object<'static>, Unknown<'static>>>> {
    let Some(value) = raw(options, name)? else { return Ok(None) };
    if value.get_type()? == ValueType::Function {
        // SAFETY: a function, checked.
        return Ok(Some(unsafe { value.cast()? }));
    }
    Err(options.refuse(format!("{name} must be a function, got {}", describe(value))))
}

/// Option `name`, the bytes of a `Buffer` (or any `Uint8Array`).
fn buffer(options: &JsOptions, name: &str) -> Result<Option<Vec<u8>>> {
    let Some(value) = raw(options, name)? else { return Ok(None) };
    if value.is_typedarray()? {
        // SAFETY: a typed array, checked; a Uint8Array is what the cast accepts.
        if let Ok(bytes) = unsafe { value.cast::<Uint8Array>() } {
            return Ok(Some(bytes.to_vec()));
        }
    }
    Err(options.refuse(format!("{name} must be a Buffer, got {}", describe(value))))
}

/// A TLS pair, `{ cert, key }` (`listen()`'s `tls`, `reloadTls()`'s argument): each PEM
/// text (a string or a `Buffer`), or a string that is no PEM, the path of a PEM file
/// (read again by `reloadTls()`).
#[cfg(not(target_family = "wasm"))]
pub fn tls_pair(tls: &JsOptions, what: &str) -> Result<switchyard_server::tls::TlsPair> {
    use switchyard_server::tls::{Pem, TlsPair};
    let pem = |name: &'static str, label: &'static str| -> Result<Pem> {
        let text = match raw(tls, name)? {
            None => return Err(tls.refuse(format!("{what} needs both cert and key: {name} is missing"))),
            Some(value) if value.get_type()? == ValueType::String => tls.string(name)?.unwrap_or_default(),
            Some(_) => return Ok(Pem::Given { name: label, pem: buffer(tls, name)?.unwrap_or_default() }),
        };
        Ok(match text.contains("-----BEGIN") {
            true => Pem::Given { name: label, pem: text.into_bytes() },
            false => Pem::File(text.into()),
        })
    };
    Ok(TlsPair { cert: pem("cert", "tls.cert")?, key: pem("key", "tls.key")? })
}

/// Converts a JavaScript value to JSON the way `JSON.stringify` does, naming `what` when
/// it cannot be: a `BigInt`, a cycle, a function.
pub fn json_value(env: &Env, value: Unknown, what: &str) -> Result<Value> {
    let refused = |detail: String| type_error(env, format!("{what} must be a JSON value: {detail}"));
    let text = crate::js::stringify(env, value).map_err(|err| refused(err.reason))?;
    let text = text.ok_or_else(|| refused(format!("{} has no JSON form", describe(value))))?;
    serde_json::from_str(&text).map_err(|err| refused(err.to_string()))
}

/// An identity as `attach`'s `authenticate` returns it.
pub fn identity(env: &Env, value: Option<Unknown>) -> Result<Identity> {
    read_identity(&read_options(env, value, "the identity", &IDENTITY_OPTIONS)?)
}

/// `handleUpgrade`'s options: the identity, and for a native socket the `head` bytes
/// of the `upgrade` event.
pub fn upgrade_options(env: &Env, value: Option<Unknown>) -> Result<(Identity, Bytes)> {
    let known: Vec<&str> = IDENTITY_OPTIONS.into_iter().chain(["head"]).collect();
    let options = read_options(env, value, "options", &known)?;
    let head = buffer(&options, "head")?.map(Bytes::from).unwrap_or_default();
    Ok((read_identity(&options)?, head))
}

/// `sessionId` as given to `handleUpgrade`: a string, or `null` for a sessionless
/// connection.
pub fn route(env: &Env, value: Unknown) -> Result<Route> {
    match value.get_type()? {
        ValueType::Null | ValueType::Undefined => Ok(Route::Sessionless),
        // SAFETY: a string, checked.
        ValueType::String => Ok(Route::Session(unsafe { value.cast::<String>()? })),
        _ => Err(type_error(env, "sessionId must be a string, or null for a sessionless connection")),
    }
}

pub fn session_error(env: &Env, err: SessionError) -> Error {
    match err {
        SessionError::InvalidOption(message) => type_error(env, message),
        other => Error::new(Status::InvalidArg, other.to_string()),
    }
}
