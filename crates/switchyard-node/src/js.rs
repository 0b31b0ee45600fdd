//! Small helpers for calling into JavaScript from Rust.

use napi::bindgen_prelude::{FnArgs, Function, FunctionCallContext, JsObjectValue, Object, ToNapiValue, Unknown};
use napi::{Env, Result};

/// Registers `listener` for `event` on an EventEmitter (a socket, a server).
pub fn listen<F>(env: &Env, emitter: &Object, event: &str, listener: F) -> Result<()>
where
    F: 'static + Fn(FunctionCallContext) -> Result<()>,
{
    let on: Function<FnArgs<(&str, Function<Unknown, ()>)>, Unknown> = emitter.get_named_property_unchecked("on")?;
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
