//! The listeners of `on(event, listener)` (and `on('message', { types }, listener)`), and
//! the delivery of relay events to them.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use napi::bindgen_prelude::{FnArgs, Function, FunctionRef, JsObjectValue, Object, Unknown};
use napi::{Env, Error, JsValue, Result, ValueType};
use switchyard_core::Event;

use crate::js::{object_of, parse, to_js};
use crate::js_types::SessionData;
use crate::options::{read_options, type_error};

/// The events listeners can subscribe to, by the names users write.
const EVENT_NAMES: [&str; 6] = ["connection", "disconnect", "sessionCreated", "sessionDeleted", "sessionExpired", "message"];

/// The listeners' event for a relay event; `None` for requests, which go to the request
/// handler instead.
fn name_of(event: &Event) -> Option<&'static str> {
    Some(match event {
        Event::Connected(_) => "connection",
        Event::Disconnected { .. } => "disconnect",
        Event::SessionCreated(_) => "sessionCreated",
        Event::SessionDeleted { .. } => "sessionDeleted",
        Event::SessionExpired { .. } => "sessionExpired",
        Event::Message { .. } => "message",
        Event::Request { .. } | Event::Published { .. } | Event::ChannelOccupied { .. } | Event::ChannelVacated { .. } | Event::TokenExpiring { .. } => return None,
    })
}

type Listener = FunctionRef<Unknown<'static>, Unknown<'static>>;

#[derive(Default)]
pub struct Listeners {
    by_event: HashMap<&'static str, Vec<Rc<Listener>>>,
    /// `message` listeners, each with the types it asked for.
    by_type: Vec<(HashSet<String>, Rc<Listener>)>,
}

fn listener_of(env: &Env, listener: Option<Unknown>) -> Result<Listener> {
    match listener {
        Some(listener) if listener.get_type()? == ValueType::Function => {
            // SAFETY: a function, checked.
            let function: Function<Unknown<'static>, Unknown<'static>> = unsafe { listener.cast()? };
            function.create_ref()
        }
        _ => Err(type_error(env, "listener must be a function")),
    }
}

impl Listeners {
    /// Checks `on`'s arguments and adds the listener. For `message`, `filter` is
    /// `{ types: [...] }` and the types are returned, for the relay to watch.
    pub fn add(&mut self, env: &Env, event: Unknown, filter: Unknown, listener: Option<Unknown>) -> Result<Vec<String>> {
        let names = || EVENT_NAMES.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
        let name = match event.get_type()? {
            // SAFETY: a string, checked.
            ValueType::String => unsafe { event.cast::<String>()? },
            _ => return Err(type_error(env, format!("event must be a string, one of {}", names()))),
        };
        let Some(&name) = EVENT_NAMES.iter().find(|n| **n == name) else {
            return Err(type_error(env, format!("unknown event {name:?}; expected one of {}", names())));
        };
        if name != "message" {
            if listener.is_some_and(|l| l.get_type().ok() != Some(ValueType::Undefined)) {
                return Err(type_error(env, "on(event, listener) takes two arguments; only 'message' takes a filter"));
            }
            self.by_event.entry(name).or_default().push(Rc::new(listener_of(env, Some(filter))?));
            return Ok(Vec::new());
        }
        if filter.get_type()? != ValueType::Object {
            return Err(type_error(env, "on('message', { types }, listener) needs a filter with the message types"));
        }
        let types = read_options(env, Some(filter), "the message filter", &["types"])?.strings("types")?;
        let types = match types {
            Some(types) if !types.is_empty() => types,
            _ => return Err(type_error(env, "on('message', { types }, listener) needs a non-empty types array")),
        };
        self.by_type.push((types.iter().cloned().collect(), Rc::new(listener_of(env, listener)?)));
        Ok(types)
    }

    /// The listeners of the event, cloned so that they may add more while being called.
    pub fn of(&self, event: &Event) -> Option<(&'static str, Vec<Rc<Listener>>)> {
        let name = name_of(event)?;
        let listeners = match event {
            Event::Message { kind, .. } => {
                self.by_type.iter().filter(|(types, _)| types.contains(kind)).map(|(_, l)| l.clone()).collect()
            }
            _ => self.by_event.get(name).cloned().unwrap_or_default(),
        };
        Some((name, listeners))
    }
}

/// Calls each listener with the event's payload. One that throws has its error printed,
/// as Node prints an unhandled rejection, and the others still run.
pub fn deliver(env: &Env, name: &str, listeners: Vec<Rc<Listener>>, event: Event) -> Result<()> {
    let payload = match event {
        Event::Connected(info) => object_of(env, &info)?.to_unknown(),
        Event::Disconnected { connection, code, reason } => {
            let mut payload = object_of(env, &connection)?;
            payload.set("code", u32::from(code))?;
            payload.set("reason", reason)?;
            payload.to_unknown()
        }
        Event::SessionCreated(info) => to_js(env, SessionData::from(info))?,
        Event::SessionDeleted { session_id, .. } | Event::SessionExpired { session_id, .. } => {
            object_of(env, &serde_json::json!({ "sessionId": session_id }))?.to_unknown()
        }
        Event::Message { connection, kind, message } => {
            let mut payload = object_of(env, &connection)?;
            payload.set("type", kind)?;
            payload.set("message", parse(env, &String::from_utf8_lossy(&message))?)?;
            payload.to_unknown()
        }
        Event::Request { .. } | Event::Published { .. } | Event::ChannelOccupied { .. } | Event::ChannelVacated { .. } | Event::TokenExpiring { .. } => return Ok(()),
    };
    for listener in listeners {
        // SAFETY: `payload` lives in the current handle scope.
        let argument = unsafe { Unknown::from_raw_unchecked(env.raw(), payload.raw()) };
        if let Err(err) = listener.borrow_back(env)?.call(argument) {
            report_error(env, &format!("a {name:?} listener threw:"), err)?;
        }
    }
    Ok(())
}

/// Prints an error thrown by the app's code, prefixed with what threw it.
pub fn report_error(env: &Env, what: &str, err: Error) -> Result<()> {
    let console: Object = env.get_global()?.get_named_property_unchecked("console")?;
    let print: Function<FnArgs<(String, Error)>, Unknown> = console.get_named_property_unchecked("error")?;
    print.bind(console)?.call((format!("switchyard: {what}"), err).into())?;
    Ok(())
}
