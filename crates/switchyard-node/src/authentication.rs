//! The app's `authenticate(request)`, as `attach` and `listen` call it. It may answer an
//! identity, `null` or `undefined` to refuse the upgrade with 401, or a Promise of either.
//! A throw, a rejection or a bad identity is printed and refused with 500: an exception
//! escaping an `upgrade` listener would take the process down.

use std::rc::Rc;

use napi::bindgen_prelude::{FunctionRef, Object, Unknown};
use napi::{Env, Error, Result, Status, ValueType};
use switchyard_server::admission::Verdict;

use crate::events::report_error;
use crate::js;
use crate::options::{self, JsOptions};

pub type Authenticate = FunctionRef<Object<'static>, Unknown<'static>>;

/// The `authenticate` option of `attach` and `listen`.
pub fn read(options: &JsOptions) -> Result<Option<Rc<Authenticate>>> {
    options::function(options, "authenticate")?.map(|function| Ok(Rc::new(function.create_ref()?))).transpose()
}

/// Calls `authenticate(request)` for `caller` (`attach`, `listen`), and `then` with its
/// verdict, at once or once its Promise settles.
pub fn ask<F>(env: &Env, authenticate: &Authenticate, caller: &'static str, request: Object<'static>, then: F) -> Result<()>
where
    F: 'static + FnOnce(&Env, Verdict) -> Result<()>,
{
    match authenticate.borrow_back(env)?.call(request) {
        Ok(answer) => js::when_settled(env, answer, move |env, outcome| {
            let verdict = verdict(env, caller, outcome)?;
            then(env, verdict)
        }),
        Err(err) => {
            report_error(env, &format!("{caller}'s authenticate threw:"), err)?;
            then(env, Verdict::FAILED)
        }
    }
}

fn verdict(env: &Env, caller: &str, outcome: std::result::Result<Unknown, Unknown>) -> Result<Verdict> {
    let answer = match outcome {
        Ok(answer) => answer,
        Err(reason) => {
            let err = Error::new(Status::GenericFailure, js::reason(reason));
            report_error(env, &format!("{caller}'s authenticate rejected:"), err)?;
            return Ok(Verdict::FAILED);
        }
    };
    if matches!(answer.get_type()?, ValueType::Null | ValueType::Undefined) {
        return Ok(Verdict::UNAUTHORIZED);
    }
    match options::identity(env, Some(answer)) {
        Ok(identity) => Ok(Verdict::Admit(identity)),
        Err(err) => {
            report_error(env, &format!("{caller}'s authenticate returned a bad identity:"), js::caught(env, err))?;
            Ok(Verdict::FAILED)
        }
    }
}
