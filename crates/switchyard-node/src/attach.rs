//! `manager.attach(server, { path, authenticate })`: an `upgrade` listener on a Node
//! HTTP server that takes the upgrades whose path matches into the native transport and
//! leaves every other one to the server's other listeners (the app's own `ws`, Next.js's
//! HMR).
//!
//! `authenticate(request)` may answer later (a Promise). Node must not read the socket
//! meanwhile, so reading stops before it is called; bytes the client sends wait in the
//! kernel and reach Rust after the takeover.

use std::rc::Rc;

use bytes::Bytes;
use napi::bindgen_prelude::{BufferSlice, Function, FunctionCallContext, JsObjectValue, Object, Unknown};
use napi::{Env, Error, Result, Status, ValueType};
use switchyard_core::{Identity, Route};
use switchyard_server::admission::Verdict;
use switchyard_server::path_pattern::PathPattern;

use crate::authentication;
use crate::events::report_error;
use crate::guard;
use crate::persistent_object::PersistentObject;
use crate::host::Host;
use crate::js::{self, call_method};
use crate::options::{read_options, type_error, JsOptions};

const DEFAULT_PATH: &str = "/session/:sessionId";
/// On a server: how many `upgrade` listeners `attach` has added to it.
const ATTACHED: &str = "__switchyardAttached";
/// On an upgrade's socket: how many of those listeners found its path not theirs.
const PASSED_OVER: &str = "__switchyardPassedOver";

/// Reads a whole-number property this module keeps on a JS object; 0 when absent.
fn counter(object: &Object, name: &str) -> Result<u32> {
    let value: Unknown = object.get_named_property_unchecked(name)?;
    if value.get_type()? != ValueType::Number {
        return Ok(0);
    }
    // SAFETY: a number, checked.
    unsafe { value.cast() }
}

/// An upgrade waiting for `authenticate`'s answer.
struct Waiting {
    socket: PersistentObject,
    request: PersistentObject,
    head: Bytes,
    route: Route,
}

pub fn attach(host: &Rc<Host>, env: &Env, server: Unknown, options: Option<Unknown>) -> Result<()> {
    crate::native::available()?;
    if server.get_type()? != ValueType::Object {
        return Err(type_error(env, "server must be an http.Server"));
    }
    // SAFETY: an object, checked.
    let mut server: Object = unsafe { server.cast()? };
    let on: Unknown = server.get_named_property_unchecked("on")?;
    if on.get_type()? != ValueType::Function {
        return Err(type_error(env, "server must be an http.Server (it has no on method)"));
    }
    let secure: Unknown = server.get_named_property_unchecked("setSecureContext")?;
    if secure.get_type()? == ValueType::Function {
        return Err(Error::new(
            Status::InvalidArg,
            "attach() cannot take over TLS connections: attach it to an http.Server behind a TLS-terminating \
             proxy, or use bridge mode (ws) with the https.Server",
        ));
    }
    let options = read_options(env, options, "options", &["path", "authenticate"])?;
    let pattern = Rc::new(read_path(env, &options)?);
    let authenticate = authentication::read(&options)?;
    let server_ref = Rc::new(PersistentObject::new(env, &server)?);
    let attached = counter(&server, ATTACHED)? + 1;
    server.set_named_property(ATTACHED, attached)?;
    let host = host.clone();
    js::listen(env, &server, "upgrade", move |ctx: FunctionCallContext| {
        guard(|| {
            let env = &*ctx.env;
            let request: Object = ctx.get(0)?;
            let socket: Object = ctx.get(1)?;
            let head = ctx.get::<BufferSlice>(2).map(|h| Bytes::copy_from_slice(&h)).unwrap_or_default();
            let url: String = request.get_named_property_unchecked::<Unknown>("url").and_then(|u| unsafe { u.cast() }).unwrap_or_default();
            let Some(route) = pattern.route(&url) else {
                return refuse_if_unclaimed(&host, env, &server_ref, &socket);
            };
            match &authenticate {
                None => upgrade(&host, env, &socket, &request, route, Identity::default(), head),
                Some(authenticate) => {
                    stop_reading(&socket)?;
                    let waiting = Waiting { socket: PersistentObject::new(env, &socket)?, request: PersistentObject::new(env, &request)?, head, route };
                    let host = host.clone();
                    authentication::ask(env, authenticate, "attach", request, move |env, verdict| settle(&host, env, verdict, waiting))
                }
            }
        })
    })
}

/// The `path` option of `attach` and `listen`.
pub fn read_path(env: &Env, options: &JsOptions) -> Result<PathPattern> {
    let pattern = options.string("path")?.unwrap_or_else(|| DEFAULT_PATH.to_owned());
    PathPattern::parse(&pattern).map_err(|message| type_error(env, message))
}

/// An upgrade no pattern claims is left to the server's other `upgrade` listeners; when
/// every listener is an `attach` and each has passed it over, nobody would ever answer
/// it, so the last of them answers 404.
fn refuse_if_unclaimed(host: &Host, env: &Env, server: &PersistentObject, socket: &Object) -> Result<()> {
    let server = server.get(env)?;
    let passed_over = counter(socket, PASSED_OVER)? + 1;
    let mut socket = *socket;
    socket.set_named_property(PASSED_OVER, passed_over)?;
    let count: Function<&str, u32> = server.get_named_property_unchecked("listenerCount")?;
    let listeners = count.bind(server)?.call("upgrade")?;
    if listeners == counter(&server, ATTACHED)? && passed_over == listeners {
        host.refuse_upgrade(&socket, 404, "Not Found")?;
    }
    Ok(())
}

fn stop_reading(socket: &Object) -> Result<()> {
    let handle: Unknown = socket.get_named_property_unchecked("_handle")?;
    if handle.get_type()? == ValueType::Object {
        // SAFETY: an object, checked.
        let handle: Object = unsafe { handle.cast()? };
        call_method(&handle, "readStop")?;
    }
    Ok(())
}

/// Takes the socket over; an error (a TLS socket) is printed and answered with 500, as an
/// exception thrown from an `upgrade` listener would take the process down.
fn upgrade(host: &Rc<Host>, env: &Env, socket: &Object, request: &Object, route: Route, identity: Identity, head: Bytes) -> Result<()> {
    if let Err(err) = host.adopt_native(env, socket, request, route, identity, head) {
        report_error(env, "attach could not take an upgrade over:", err)?;
        host.refuse_upgrade(socket, 500, "Internal Server Error")?;
    }
    Ok(())
}

/// Lets the upgrade in or refuses it, unless its client has gone meanwhile.
fn settle(host: &Rc<Host>, env: &Env, verdict: Verdict, waiting: Waiting) -> Result<()> {
    let socket = waiting.socket.get(env)?;
    let destroyed: bool = socket.get_named_property_unchecked::<Unknown>("destroyed").and_then(|d| unsafe { d.cast() }).unwrap_or(false);
    if destroyed {
        return Ok(());
    }
    match verdict {
        Verdict::Admit(identity) => {
            let request = waiting.request.get(env)?;
            upgrade(host, env, &socket, &request, waiting.route, identity, waiting.head)
        }
        Verdict::Refuse { status, reason } => host.refuse_upgrade(&socket, status, reason),
    }
}
