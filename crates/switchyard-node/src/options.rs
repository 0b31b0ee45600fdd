//! Reads the option objects users pass from JavaScript, refusing bad values with a
//! `TypeError` that names the option, so a typo or a string where a number belongs fails
//! at the call that made it rather than later, somewhere else.

use napi::bindgen_prelude::{Function, JsObjectValue, Object, Unknown};
use napi::{Env, Error, JsValue, Result, Status, ValueType};
use serde_json::Value;
use switchyard_core::schema::{Range, Setting};

/// Throws a JavaScript `TypeError` and returns the error that tells napi it is pending.
pub fn type_error(env: &Env, message: impl AsRef<str>) -> Error {
    match env.throw_type_error(message.as_ref(), None) {
        Ok(()) => Error::from_status(Status::PendingException),
        Err(err) => err,
    }
}

/// Describes a value for an error message: `-1`, `"30000" (a string)`, `NaN`.
fn describe(value: &Unknown) -> String {
    match value.get_type() {
        // SAFETY (both casts): the value's type was just checked.
        Ok(ValueType::Number) => unsafe { value.cast::<f64>() }.map_or("a number".into(), |n| n.to_string()),
        Ok(ValueType::String) => match unsafe { value.cast::<String>() } {
            Ok(s) => format!("{:?} (a string)", truncate(&s)),
            Err(_) => "a string".into(),
        },
        Ok(ValueType::Null) => "null".into(),
        Ok(ValueType::Undefined) => "undefined".into(),
        Ok(ValueType::Boolean) => "a boolean".into(),
        Ok(ValueType::BigInt) => "a bigint".into(),
        Ok(ValueType::Function) => "a function".into(),
        Ok(ValueType::Symbol) => "a symbol".into(),
        _ if is_array(value) => "an array".into(),
        _ => "an object".into(),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

fn is_array(value: &Unknown) -> bool {
    value.is_array().unwrap_or(false)
}

/// A string argument or option; anything else is a `TypeError` naming it.
pub fn string_argument(env: &Env, value: Unknown, name: &str) -> Result<String> {
    if value.get_type()? == ValueType::String {
        // SAFETY: a string, checked above.
        return unsafe { value.cast::<String>() };
    }
    Err(type_error(env, format!("{name} must be a string, got {}", describe(&value))))
}

/// A plain options object (or nothing), checked against the names it may contain.
pub struct OptionsReader<'env> {
    env: &'env Env,
    object: Option<Object<'env>>,
}

impl<'env> OptionsReader<'env> {
    /// `what` names the argument in errors (`config`, `options`). `undefined` and `null`
    /// read as an empty object; anything that is not a plain object is refused, as is a
    /// key not in `known`.
    pub fn new(env: &'env Env, value: Option<Unknown<'env>>, what: &str, known: &[&str]) -> Result<Self> {
        let Some(value) = value else { return Ok(Self { env, object: None }) };
        match value.get_type()? {
            ValueType::Undefined | ValueType::Null => return Ok(Self { env, object: None }),
            ValueType::Object if !is_array(&value) => {}
            _ => return Err(type_error(env, format!("{what} must be an object, got {}", describe(&value)))),
        }
        // SAFETY: checked to be an object just above.
        let object: Object<'env> = unsafe { value.cast()? };
        for key in Object::keys(&object)? {
            if !known.contains(&key.as_str()) {
                return Err(type_error(
                    env,
                    format!("unknown option {key:?} in {what}; expected one of: {}", known.join(", ")),
                ));
            }
        }
        Ok(Self { env, object: Some(object) })
    }

    /// The value of `name`, or `None` when it is absent or `undefined`.
    fn get(&self, name: &str) -> Result<Option<Unknown<'env>>> {
        let Some(object) = &self.object else { return Ok(None) };
        let value: Unknown<'env> = object.get_named_property_unchecked(name)?;
        Ok(match value.get_type()? {
            ValueType::Undefined => None,
            _ => Some(value),
        })
    }

    /// A whole number within `range`.
    fn whole_number(&self, name: &str, range: Range) -> Result<Option<u64>> {
        let Some(value) = self.get(name)? else { return Ok(None) };
        if value.get_type()? == ValueType::Number {
            // SAFETY: a number, checked above.
            let n = unsafe { value.cast::<f64>()? };
            if n.is_finite() && n.fract() == 0.0 && n >= range.min as f64 && n <= range.max as f64 {
                return Ok(Some(n as u64));
            }
        }
        let Range { min, max } = range;
        Err(type_error(self.env, format!("{name} must be a whole number from {min} to {max}, got {}", describe(&value))))
    }

    /// A whole number setting of the option schema, within its bounds there, by the last
    /// part of its JS path.
    pub fn setting(&self, setting: &Setting) -> Result<Option<u64>> {
        let name = setting.js_name().expect("a setting the addon reads has a JS name");
        self.whole_number(name, setting.range.expect("a whole number setting has bounds"))
    }

    /// A whole number from 1 to `max`.
    pub fn positive_integer(&self, name: &str, max: u64) -> Result<Option<u64>> {
        self.whole_number(name, Range { min: 1, max })
    }

    /// A finite number greater than 0 (fractions allowed).
    pub fn positive_number(&self, name: &str) -> Result<Option<f64>> {
        let Some(value) = self.get(name)? else { return Ok(None) };
        if value.get_type()? == ValueType::Number {
            // SAFETY: a number, checked.
            let n = unsafe { value.cast::<f64>()? };
            if n.is_finite() && n > 0.0 {
                return Ok(Some(n));
            }
        }
        Err(type_error(self.env, format!("{name} must be a number greater than 0, got {}", describe(&value))))
    }

    /// A whole number from 0 to `max`.
    pub fn count(&self, name: &str, max: u64) -> Result<Option<u64>> {
        self.whole_number(name, Range { min: 0, max })
    }

    /// Whether `name` is given at all.
    pub fn has(&self, name: &str) -> Result<bool> {
        Ok(self.get(name)?.is_some())
    }

    /// The raw value of `name`, for a reader of its own.
    pub fn raw(&self, name: &str) -> Result<Option<Unknown<'env>>> {
        self.get(name)
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>> {
        let Some(value) = self.get(name)? else { return Ok(None) };
        if value.get_type()? == ValueType::Boolean {
            // SAFETY: a boolean, checked.
            return Ok(Some(unsafe { value.cast::<bool>()? }));
        }
        Err(type_error(self.env, format!("{name} must be true or false, got {}", describe(&value))))
    }

    /// An array of strings.
    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        let Some(value) = self.get(name)? else { return Ok(None) };
        let refused = || type_error(self.env, format!("{name} must be an array of strings, got {}", describe(&value)));
        if !is_array(&value) {
            return Err(refused());
        }
        // SAFETY: an array, checked; each element is checked to be a string.
        let items: Vec<Unknown> = unsafe { value.cast() }.map_err(|_| refused())?;
        items
            .into_iter()
            .map(|item| match item.get_type() {
                Ok(ValueType::String) => unsafe { item.cast::<String>() }.map_err(|_| refused()),
                _ => Err(refused()),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// A nested options object, read with the same rules.
    pub fn nested(&self, name: &str, known: &[&str]) -> Result<OptionsReader<'env>> {
        OptionsReader::new(self.env, self.get(name)?, name, known)
    }

    pub fn string(&self, name: &str) -> Result<Option<String>> {
        self.get(name)?.map(|value| string_argument(self.env, value, name)).transpose()
    }

    /// A string that must be one of `choices`.
    pub fn choice(&self, name: &str, choices: &[&'static str]) -> Result<Option<&'static str>> {
        let Some(text) = self.string(name)? else { return Ok(None) };
        match choices.iter().find(|c| **c == text) {
            Some(choice) => Ok(Some(choice)),
            None => Err(type_error(
                self.env,
                format!("{name} must be one of {}, got {text:?}", quoted(choices)),
            )),
        }
    }

    pub fn function(&self, name: &str) -> Result<Option<Function<'env, Object<'static>, Unknown<'static>>>> {
        let Some(value) = self.get(name)? else { return Ok(None) };
        if value.get_type()? == ValueType::Function {
            // SAFETY: a function, checked.
            return Ok(Some(unsafe { value.cast()? }));
        }
        Err(type_error(self.env, format!("{name} must be a function, got {}", describe(&value))))
    }

    /// The bytes of a `Buffer` (or any `Uint8Array`).
    pub fn buffer(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(value) = self.get(name)? else { return Ok(None) };
        if value.is_typedarray()? {
            // SAFETY: a typed array, checked; a Uint8Array is what the cast accepts.
            if let Ok(bytes) = unsafe { value.cast::<napi::bindgen_prelude::Uint8Array>() } {
                return Ok(Some(bytes.to_vec()));
            }
        }
        Err(type_error(self.env, format!("{name} must be a Buffer, got {}", describe(&value))))
    }

    /// Any JSON value (`null` included).
    pub fn json(&self, name: &str) -> Result<Option<Value>> {
        let Some(value) = self.get(name)? else { return Ok(None) };
        json_value(self.env, value, name).map(Some)
    }
}

/// Converts a JavaScript value to JSON the way `JSON.stringify` does (so `toJSON`, a
/// `Date`, a dropped `undefined` property all behave as in `res.json`), naming `what`
/// when it cannot be: a `BigInt`, a cycle, a function.
pub fn json_value(env: &Env, value: Unknown, what: &str) -> Result<Value> {
    let json: Object = env.get_global()?.get_named_property_unchecked("JSON")?;
    let stringify: Function<Unknown, Unknown> = json.get_named_property_unchecked("stringify")?;
    let refused = |detail: String| type_error(env, format!("{what} must be a JSON value: {detail}"));
    let text = stringify.call(value).map_err(|err| refused(err.reason))?;
    if text.get_type()? != ValueType::String {
        return Err(refused(format!("{} has no JSON form", describe(&value))));
    }
    // SAFETY: a string, checked.
    let text = unsafe { text.cast::<String>()? };
    serde_json::from_str(&text).map_err(|err| refused(err.to_string()))
}

fn quoted(choices: &[&str]) -> String {
    choices.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(" or ")
}
