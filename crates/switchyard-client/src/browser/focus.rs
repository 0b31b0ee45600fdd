//! `FocusDeclarationProtocol`: the awareness client. It registers the case this window has
//! open, keeps the registration fresh with heartbeats, reports when the window gets
//! focus, surfaces the server's warnings, and registers again after a reconnect.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use js_sys::{Function, JSON};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Event, VisibilityState};

use super::client::{ClientOptions, Connection};
use super::timer::Timer;
use super::{error, read, type_error};
use crate::backoff::Backoff;
use crate::eventstream::Transport;

const WINDOW_ID_KEY: &str = "switchyard.windowId";
const DEFAULT_HEARTBEAT_MS: f64 = 20_000.0;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FocusOptions {
    session_service_url: String,
    user_id: String,
    window_id: Option<String>,
    heartbeat_interval_ms: Option<f64>,
    #[serde(default)]
    reconnect: Backoff,
}

/// The case this window has open.
struct OpenCase {
    case_id: String,
    slide_id: Option<String>,
}

struct State {
    open: Option<OpenCase>,
    /// `open()`'s Promise, waiting for `registered`.
    registering: Vec<(Function, Function)>,
    heartbeat: Option<Timer>,
    warning_listeners: Vec<Function>,
    cleared_listeners: Vec<Function>,
    /// The focus and visibility listeners on `window` and `document`.
    page_listeners: Vec<Closure<dyn FnMut(Event)>>,
}

struct Focus {
    connection: Rc<Connection>,
    user_id: String,
    window_id: String,
    heartbeat_ms: f64,
    state: RefCell<State>,
}

/// The string fields of a protocol message's payload.
type Payload = Vec<(&'static str, String)>;

/// `{"type":kind,"payload":{...}}`, the payload's strings escaped by `JSON.stringify`.
fn message(kind: &str, payload: &Payload) -> String {
    let fields: Vec<String> = payload
        .iter()
        .map(|(name, value)| {
            let value = JSON::stringify(&JsValue::from_str(value)).map(String::from).unwrap_or_default();
            format!("\"{name}\":{value}")
        })
        .collect();
    format!(r#"{{"type":"{kind}","payload":{{{}}}}}"#, fields.join(","))
}

impl Focus {
    fn ids(&self) -> Payload {
        vec![("userId", self.user_id.clone()), ("windowId", self.window_id.clone())]
    }

    fn send(&self, kind: &str, payload: Payload) -> Result<(), JsValue> {
        self.connection.send_text(message(kind, &payload))
    }

    /// Sends the open case's registration (on `open()`, and again after each reconnect).
    fn register(&self) -> Result<(), JsValue> {
        let mut fields = self.ids();
        {
            let state = self.state.borrow();
            let Some(open) = &state.open else { return Ok(()) };
            fields.push(("caseId", open.case_id.clone()));
            if let Some(slide) = &open.slide_id {
                fields.push(("slideId", slide.clone()));
            }
        }
        fields.push(("timestamp", String::from(js_sys::Date::new_0().to_iso_string())));
        self.send("register", fields)
    }

    fn received(&self, message: &JsValue) {
        let kind = js_sys::Reflect::get(message, &"type".into()).ok().and_then(|k| k.as_string()).unwrap_or_default();
        let payload = js_sys::Reflect::get(message, &"payload".into()).unwrap_or(JsValue::UNDEFINED);
        let to_call: Vec<Function> = match kind.as_str() {
            "registered" => {
                let waiting = std::mem::take(&mut self.state.borrow_mut().registering);
                for (resolve, _) in waiting {
                    let _ = resolve.call1(&JsValue::NULL, &payload);
                }
                return;
            }
            "warning" => self.state.borrow().warning_listeners.clone(),
            "warning_cleared" => self.state.borrow().cleared_listeners.clone(),
            "error" => {
                let waiting = std::mem::take(&mut self.state.borrow_mut().registering);
                let text = JSON::stringify(&payload).map(String::from).unwrap_or_default();
                for (_, reject) in waiting {
                    let _ = reject.call1(&JsValue::NULL, &error(&format!("registration refused: {text}")));
                }
                return;
            }
            _ => return,
        };
        for listener in to_call {
            let _ = listener.call1(&JsValue::NULL, &payload);
        }
    }

    fn focused(&self) {
        if self.state.borrow().open.is_some() {
            let _ = self.send("focus", self.ids());
        }
    }
}

/// A random window id kept in sessionStorage: a reload keeps it, another tab gets its own.
fn window_id() -> String {
    let window = web_sys::window();
    let storage = window.as_ref().and_then(|w| w.session_storage().ok().flatten());
    if let Some(id) = storage.as_ref().and_then(|s| s.get_item(WINDOW_ID_KEY).ok().flatten()) {
        return id;
    }
    let id = window
        .as_ref()
        .and_then(|w| w.crypto().ok())
        .map(|c| c.random_uuid())
        .unwrap_or_else(|| format!("window-{}", (js_sys::Math::random() * 1e16) as u64));
    if let Some(storage) = storage {
        let _ = storage.set_item(WINDOW_ID_KEY, &id);
    }
    id
}

/// The focus declaration protocol's client: one per browser window.
#[wasm_bindgen]
pub struct FocusDeclarationProtocol {
    focus: Rc<Focus>,
}

#[wasm_bindgen]
impl FocusDeclarationProtocol {
    /// Connects to the awareness service. Nothing is registered until `open()`.
    #[wasm_bindgen(constructor)]
    pub fn new(#[wasm_bindgen(unchecked_param_type = "FocusDeclarationOptions")] options: JsValue) -> Result<FocusDeclarationProtocol, JsValue> {
        if options.is_undefined() || options.is_null() {
            return Err(type_error("FocusDeclarationProtocol needs { sessionServiceUrl, userId }"));
        }
        let options: FocusOptions = read(options, "FocusDeclarationProtocol options")?;
        let heartbeat_ms = options.heartbeat_interval_ms.unwrap_or(DEFAULT_HEARTBEAT_MS);
        if !heartbeat_ms.is_finite() || heartbeat_ms <= 0.0 {
            return Err(type_error("heartbeatIntervalMs must be a positive number of milliseconds"));
        }
        if options.user_id.is_empty() {
            return Err(type_error("userId must not be empty"));
        }
        // The awareness service is reached over WebSocket only: its event stream, where a
        // server offers one, is for session members.
        let client_options = ClientOptions { reconnect: options.reconnect, transports: Some(vec![Transport::WebSocket]), ..ClientOptions::default() };
        let connection = Connection::new(&options.session_service_url, client_options)?;
        let focus = Rc::new(Focus {
            connection: connection.clone(),
            user_id: options.user_id,
            window_id: options.window_id.unwrap_or_else(window_id),
            heartbeat_ms,
            state: RefCell::new(State {
                open: None,
                registering: Vec::new(),
                heartbeat: None,
                warning_listeners: Vec::new(),
                cleared_listeners: Vec::new(),
                page_listeners: Vec::new(),
            }),
        });
        let weak: Weak<Focus> = Rc::downgrade(&focus);
        let on_message = {
            let weak = weak.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |message: JsValue| {
                if let Some(focus) = weak.upgrade() {
                    focus.received(&message);
                }
            })
        };
        connection.on("*", on_message.into_js_value().unchecked_into());
        let reopened = weak.clone();
        connection.set_on_open(Box::new(move || {
            if let Some(focus) = reopened.upgrade() {
                let _ = focus.register();
            }
        }));
        watch_focus(&focus, weak)?;
        Ok(Self { focus })
    }

    /// Registers `caseId` (and `slideId`) as this window's open case; resolves with the
    /// server's `registered` answer. Heartbeats keep it fresh until `close()`.
    // The parameters are named as JavaScript sees them.
    #[allow(non_snake_case)]
    #[wasm_bindgen(unchecked_return_type = "Promise<Registered>")]
    pub fn open(&self, caseId: String, slideId: Option<String>) -> Result<js_sys::Promise, JsValue> {
        let (case_id, slide_id) = (caseId, slideId);
        if case_id.is_empty() {
            return Err(type_error("caseId must not be empty"));
        }
        self.focus.state.borrow_mut().open = Some(OpenCase { case_id, slide_id });
        let focus = self.focus.clone();
        let promise = js_sys::Promise::new(&mut |resolve, reject| {
            focus.state.borrow_mut().registering.push((resolve, reject.clone()));
            if let Err(err) = focus.register() {
                focus.state.borrow_mut().registering.clear();
                let _ = reject.call1(&JsValue::NULL, &err);
            }
        });
        let weak = Rc::downgrade(&self.focus);
        let heartbeat = Timer::every(self.focus.heartbeat_ms, move || {
            if let Some(focus) = weak.upgrade() {
                let _ = focus.send("heartbeat", focus.ids());
            }
        });
        if let Some(previous) = self.focus.state.borrow_mut().heartbeat.replace(heartbeat) {
            previous.cancel();
        }
        Ok(promise)
    }

    /// Calls `listener` with each warning (`multi-case`, `case-mismatch`).
    #[wasm_bindgen(js_name = onWarning)]
    pub fn on_warning(&self, #[wasm_bindgen(unchecked_param_type = "(warning: CaseWarning) => void")] listener: Function) {
        self.focus.state.borrow_mut().warning_listeners.push(listener);
    }

    /// Calls `listener` when the user is back to one case or none.
    #[wasm_bindgen(js_name = onWarningCleared)]
    pub fn on_warning_cleared(&self, #[wasm_bindgen(unchecked_param_type = "(cleared: WarningCleared) => void")] listener: Function) {
        self.focus.state.borrow_mut().cleared_listeners.push(listener);
    }

    /// Deregisters the open case, then closes the connection for good.
    pub fn close(&self) {
        let had_case = {
            let mut state = self.focus.state.borrow_mut();
            if let Some(heartbeat) = state.heartbeat.take() {
                heartbeat.cancel();
            }
            unwatch_focus(&mut state);
            state.open.take().is_some()
        };
        if had_case {
            let _ = self.focus.send("deregister", self.focus.ids());
        }
        self.focus.connection.close();
    }

    /// Where the connection to the awareness service stands (`ConnectionStatus`).
    #[wasm_bindgen(getter, unchecked_return_type = "ConnectionStatus")]
    pub fn status(&self) -> String {
        self.focus.connection.status().as_str().to_owned()
    }

    /// This window's id, as its registrations name it.
    #[wasm_bindgen(getter, js_name = windowId)]
    pub fn window_id(&self) -> String {
        self.focus.window_id.clone()
    }
}

/// Reports focus when the window gains it or its page becomes visible.
fn watch_focus(focus: &Rc<Focus>, weak: Weak<Focus>) -> Result<(), JsValue> {
    let Some(window) = web_sys::window() else { return Ok(()) };
    let on_focus = {
        let weak = weak.clone();
        Closure::<dyn FnMut(Event)>::new(move |_| {
            if let Some(focus) = weak.upgrade() {
                focus.focused();
            }
        })
    };
    let on_visible = Closure::<dyn FnMut(Event)>::new(move |_| {
        let visible = web_sys::window().and_then(|w| w.document()).is_some_and(|d| d.visibility_state() == VisibilityState::Visible);
        if let (true, Some(focus)) = (visible, weak.upgrade()) {
            focus.focused();
        }
    });
    window.add_event_listener_with_callback("focus", on_focus.as_ref().unchecked_ref())?;
    if let Some(document) = window.document() {
        document.add_event_listener_with_callback("visibilitychange", on_visible.as_ref().unchecked_ref())?;
    }
    focus.state.borrow_mut().page_listeners = vec![on_focus, on_visible];
    Ok(())
}

fn unwatch_focus(state: &mut State) {
    let Some(window) = web_sys::window() else { return };
    if let [on_focus, on_visible] = &state.page_listeners[..] {
        let _ = window.remove_event_listener_with_callback("focus", on_focus.as_ref().unchecked_ref());
        if let Some(document) = window.document() {
            let _ = document.remove_event_listener_with_callback("visibilitychange", on_visible.as_ref().unchecked_ref());
        }
    }
    state.page_listeners.clear();
}
