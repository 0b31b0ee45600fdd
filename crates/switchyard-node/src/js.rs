//! Small helpers for calling into JavaScript from Rust.

use std::cell::RefCell;
use std::rc::Rc;

use napi::bindgen_prelude::{FnArgs, Function, FunctionCallContext, JsObjectValue, Object, ToNapiValue, Unknown};
use napi::{Env, Error, JsValue, Result, Status, ValueType};

use crate::guard;

/// A function JavaScript calls with one value: a listener, a Promise's reaction.
type Reaction<'a> = Function<'a, Unknown<'a>, ()>;
/// `setTimeout` and `setInterval`: `(callback, ms)`, answering the timer.
pub type SetTimer<'a, Timer> = Function<'a, FnArgs<(Function<'a, (), ()>, f64)>, Timer>;

/// Registers `listener` for `event` on an EventEmitter (a socket, a server).
pub fn listen<F>(env: &Env, emitter: &Object, event: &str, listener: F) -> Result<()>
where
    F: 'static + Fn(FunctionCallContext) -> Result<()>,
{
    let on: Function<FnArgs<(&str, Reaction)>, Unknown> = emitter.get_named_property_unchecked("on")?;
    let callback = env.create_function_from_closure::<Unknown, (), _>(event, listener)?;
    on.bind(emitter)?.call((event, callback).into())?;
    Ok(())
}

/// Calls `object[name]()` with `object` as `this`.
pub fn call_method<'env>(object: &Object<'env>, name: &str) -> Result<Unknown<'env>> {
    let method: Function<(), Unknown> = object.get_named_property_unchecked(name)?;
    method.bind(object)?.call(())
}

/// A Rust value as a JavaScript one, in the current handle scope.
pub fn to_js<T: ToNapiValue>(env: &Env, value: T) -> Result<Unknown<'static>> {
    // SAFETY: the value is created in the current handle scope and used within it.
    unsafe { Ok(Unknown::from_raw_unchecked(env.raw(), T::to_napi_value(env.raw(), value)?)) }
}

/// A value serialized as a JavaScript object, in the current handle scope. It goes by
/// way of JSON: napi's serializer would make a `BigInt` of a whole number past 2^32 (a
/// timestamp, a byte count), where JSON's conversion keeps every safe integer a number.
pub fn object_of<'env>(env: &'env Env, value: &impl serde::Serialize) -> Result<Object<'env>> {
    let json = serde_json::to_value(value).map_err(|err| Error::from_reason(err.to_string()))?;
    // SAFETY: what serializes as a map is an object.
    unsafe { to_js(env, json)?.cast::<Object>() }
}

/// Calls `then` with `value` now or, when `value` is a Promise (any thenable), once it
/// settles: `Ok` with what it resolved to, `Err` with the reason it was rejected.
pub fn when_settled<F>(env: &Env, value: Unknown, then: F) -> Result<()>
where
    F: 'static + FnOnce(&Env, std::result::Result<Unknown, Unknown>) -> Result<()>,
{
    let method = match value.get_type()? {
        // SAFETY: an object, checked.
        ValueType::Object => unsafe { value.cast::<Object>()? }.get_named_property_unchecked::<Unknown>("then")?,
        _ => return then(env, Ok(value)),
    };
    if method.get_type()? != ValueType::Function {
        return then(env, Ok(value));
    }
    let waiting = Rc::new(RefCell::new(Some(then)));
    let settle = |resolved: bool| {
        let waiting = waiting.clone();
        move |ctx: FunctionCallContext| {
            guard(|| {
                let Some(then) = waiting.borrow_mut().take() else { return Ok(()) };
                let value: Unknown = ctx.get(0)?;
                then(ctx.env, if resolved { Ok(value) } else { Err(value) })
            })
        }
    };
    let resolve = env.create_function_from_closure::<Unknown, (), _>("resolved", settle(true))?;
    let reject = env.create_function_from_closure::<Unknown, (), _>("rejected", settle(false))?;
    // SAFETY: a function and an object, both checked above.
    let method: Function<FnArgs<(Reaction, Reaction)>, Unknown> = unsafe { method.cast()? };
    method.bind(unsafe { value.cast::<Object>()? })?.call((resolve, reject).into())?;
    Ok(())
}

/// `err` with the exception it left pending (as [`type_error`](crate::options::type_error)
/// does) taken out of JavaScript, for an error to be reported rather than thrown.
pub fn caught(env: &Env, err: Error) -> Error {
    if err.status != Status::PendingException {
        return err;
    }
    let mut exception = std::ptr::null_mut();
    // SAFETY: called on the JS thread with its live env; `exception` is written on success.
    if unsafe { napi::sys::napi_get_and_clear_last_exception(env.raw(), &mut exception) } != napi::sys::Status::napi_ok {
        return err;
    }
    // SAFETY: the exception is a value of the current handle scope.
    let exception = unsafe { Unknown::from_raw_unchecked(env.raw(), exception) };
    Error::new(Status::GenericFailure, reason(exception))
}

/// What a thrown value or a rejection reason says: an `Error`'s message, else the value as
/// a string.
pub fn reason(value: Unknown) -> String {
    if value.get_type().ok() == Some(ValueType::Object) {
        // SAFETY: an object, checked.
        if let Ok(message) = unsafe { value.cast::<Object>() }.and_then(|o| o.get_named_property_unchecked::<Unknown>("message")) {
            if message.get_type().ok() == Some(ValueType::String) {
                // SAFETY: a string, checked.
                if let Ok(text) = unsafe { message.cast::<String>() } {
                    return text;
                }
            }
        }
    }
    value.coerce_to_string().and_then(|s| s.into_utf8()).and_then(|s| s.into_owned()).unwrap_or_else(|_| "unknown error".into())
}

/// `JSON.stringify(value)`; `None` for what has no JSON form (`undefined`, a function).
pub fn stringify(env: &Env, value: Unknown) -> Result<Option<String>> {
    let json: Object = env.get_global()?.get_named_property_unchecked("JSON")?;
    let stringify: Function<Unknown, Unknown> = json.get_named_property_unchecked("stringify")?;
    let text = stringify.call(value)?;
    // SAFETY: a string, checked.
    Ok(if text.get_type()? == ValueType::String { Some(unsafe { text.cast::<String>()? }) } else { None })
}

/// `JSON.parse(text)`.
pub fn parse<'env>(env: &'env Env, text: &str) -> Result<Unknown<'env>> {
    let json: Object = env.get_global()?.get_named_property_unchecked("JSON")?;
    let parse: Function<&str, Unknown> = json.get_named_property_unchecked("parse")?;
    parse.call(text)
}

/// Calls `callback` once after `ms` milliseconds (a ref'd timer: it keeps Node alive
/// until it fires).
pub fn set_timeout(env: &Env, ms: f64, callback: impl FnOnce(&Env) -> Result<()> + 'static) -> Result<()> {
    let callback = RefCell::new(Some(callback));
    let function = env.create_function_from_closure::<(), (), _>("switchyardTimeout", move |ctx| {
        guard(|| match callback.borrow_mut().take() {
            Some(callback) => callback(ctx.env),
            None => Ok(()),
        })
    })?;
    let set_timeout: SetTimer<Unknown> = env.get_global()?.get_named_property_unchecked("setTimeout")?;
    set_timeout.call((function, ms).into())?;
    Ok(())
}
