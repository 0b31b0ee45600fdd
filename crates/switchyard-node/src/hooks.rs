//! The app's hooks (`hooks: { joinChannel, publish }`): each question the relay queued is
//! put to its hook on the JavaScript thread, and the hook's answer (now, or a Promise's)
//! goes back to the relay as a verdict. A hook that throws, rejects or answers what no
//! verdict reads is `UNAVAILABLE`, printed the first time for each hook.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use napi::bindgen_prelude::{FunctionRef, JsObjectValue, Object, Unknown};
use napi::{Env, Result, ValueType};
use serde::Serialize;
use serde_json::value::RawValue;
use switchyard_core::{schema, Ask, ConnId, Decides, Question, SessionId, Verdict};

use crate::events::report_error;
use crate::js;
use crate::options::{function, read_options};

type Hook = FunctionRef<Object<'static>, Unknown<'static>>;

/// The hooks the app gave.
#[derive(Default)]
pub struct JsHooks {
    join_channel: Option<Rc<Hook>>,
    publish: Option<Rc<Hook>>,
    /// Whether each hook's first failure was printed: `[joinChannel, publish]`.
    reported: Rc<Cell<[bool; 2]>>,
}

/// What a hook is called with.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Asked<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    connection_id: ConnId,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a SessionId>,
    identity: Identity<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a RawValue>,
}

/// Who asks, as `authenticate` gave it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    organization_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a serde_json::Value>,
}

impl JsHooks {
    /// The functions of the config's `hooks` (the settings reader has checked them).
    pub fn read(env: &Env, config: Option<Unknown>) -> Result<Self> {
        let config = read_options(env, config, "config", &schema::js_names_under(""))?;
        let hooks = config.nested("hooks", &schema::js_names_under("hooks"))?;
        let hook = |name: &str| -> Result<Option<Rc<Hook>>> { function(&hooks, name)?.map(|f| f.create_ref().map(Rc::new)).transpose() };
        Ok(Self { join_channel: hook("joinChannel")?, publish: hook("publish")?, reported: Rc::default() })
    }

    /// The questions these hooks answer.
    pub fn decides(&self) -> Decides {
        Decides { join: self.join_channel.is_some(), publish: self.publish.is_some() }
    }

    /// Puts `question` to its hook; `decide` gets the verdict once there is one.
    pub fn ask(&self, env: &Env, question: Question, decide: impl FnOnce(&Env, Verdict) -> Result<()> + 'static) -> Result<()> {
        let (hook, name, index, channel, message) = match &question.ask {
            Ask::Join { channel, .. } => (&self.join_channel, "joinChannel", 0, Some(channel.as_str()), None),
            Ask::Publish { channel, message } => (&self.publish, "publish", 1, channel.as_deref(), Some(message)),
            // Fresh tokens are checked by token auth, before any hook.
            Ask::Refresh { .. } => return decide(env, Verdict::Refuse(None)),
        };
        let Some(hook) = hook else { return decide(env, Verdict::Refuse(None)) };
        let info = &question.connection;
        let message = match message.map(|bytes| serde_json::from_slice::<&RawValue>(bytes)).transpose() {
            Ok(message) => message,
            Err(_) => return decide(env, Verdict::Refuse(Some("A message the application checks must be JSON".into()))),
        };
        let asked = Asked {
            channel,
            connection_id: info.connection_id,
            session_id: info.session_id.as_ref(),
            identity: Identity {
                client_id: &info.client_id,
                user_id: info.user_id.as_deref(),
                organization_id: info.organization_id.as_deref(),
                metadata: info.metadata.as_ref(),
            },
            message,
        };
        // One JSON.parse builds the argument faster than a napi call per property.
        let text = serde_json::to_string(&asked).map_err(|err| napi::Error::from_reason(err.to_string()))?;
        // SAFETY: JSON of a struct parses to an object.
        let argument = unsafe { js::parse(env, &text)?.cast::<Object>()? };
        let replaces = index == 1;
        let reported = self.reported.clone();
        let settled = move |env: &Env, outcome: std::result::Result<Unknown, Unknown>| {
            let verdict = match outcome {
                Ok(answer) => verdict_of(env, answer, replaces),
                Err(reason) => Err(format!("rejected: {}", js::reason(reason))),
            };
            let verdict = verdict.or_else(|failure| {
                let mut printed = reported.get();
                if !std::mem::replace(&mut printed[index], true) {
                    reported.set(printed);
                    let message = format!("the {name} hook {failure}; the join or message was refused UNAVAILABLE (later failures are counted in getStats().hooks, not printed)");
                    report_error(env, &message, napi::Error::from_reason(failure))?;
                }
                Ok::<_, napi::Error>(Verdict::Unavailable)
            })?;
            decide(env, verdict)
        };
        match hook.borrow_back(env)?.call(argument) {
            Ok(answer) => js::when_settled(env, answer, settled),
            Err(thrown) => {
                let thrown = js::caught(env, thrown);
                settled(env, Err(js::to_js(env, thrown.reason)?))
            }
        }
    }
}

/// The verdict a hook's answer gives: `true`, `false`, `{ allow, reason }`, or, from
/// `publish` (`replaces`), `{ message }`.
fn verdict_of(env: &Env, answer: Unknown, replaces: bool) -> std::result::Result<Verdict, String> {
    match answer.get_type().map_err(|err| err.reason)? {
        // SAFETY: a boolean, checked.
        ValueType::Boolean => Ok(if unsafe { answer.cast::<bool>() }.map_err(|err| err.reason)? { Verdict::Allow } else { Verdict::Refuse(None) }),
        ValueType::Object => {
            // SAFETY: an object, checked.
            let object = unsafe { answer.cast::<Object>() }.map_err(|err| err.reason)?;
            let field = |name: &str| object.get_named_property_unchecked::<Unknown>(name).map_err(|err| err.reason);
            let message = field("message")?;
            if replaces && message.get_type().map_err(|err| err.reason)? != ValueType::Undefined {
                let text = js::stringify(env, message).map_err(|err| err.reason)?.ok_or("returned a message with no JSON form")?;
                return Ok(Verdict::Replace(Bytes::from(text)));
            }
            let allow = field("allow")?;
            if allow.get_type().map_err(|err| err.reason)? != ValueType::Boolean {
                return Err(format!("returned an object without allow{}", if replaces { " or message" } else { "" }));
            }
            // SAFETY: a boolean, checked.
            if unsafe { allow.cast::<bool>() }.map_err(|err| err.reason)? {
                return Ok(Verdict::Allow);
            }
            let reason = field("reason")?;
            // SAFETY: a string, checked.
            let reason = (reason.get_type().map_err(|err| err.reason)? == ValueType::String).then(|| unsafe { reason.cast::<String>() }.ok()).flatten();
            Ok(Verdict::Refuse(reason))
        }
        _ => Err(format!("returned {}; a hook returns true, false or {{ allow: false, reason }}", js::reason(answer))),
    }
}
