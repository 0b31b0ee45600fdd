//! `listen({ authenticate })`: an upgrade read on the native runtime asks the JS thread
//! who its client is and waits for the answer; the JS thread calls the app's
//! `authenticate` with what an `IncomingMessage` would have told it.

use std::rc::Rc;
use std::sync::Arc;

use napi::bindgen_prelude::{JsObjectValue, Object};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{Env, Result};
use parking_lot::Mutex;
use switchyard_server::admission::Verdict;
use switchyard_server::listener::Request;
use switchyard_server::relay_port::Gatekeeper;
use tokio::sync::oneshot;

use crate::authentication::{self, Authenticate};
use crate::guard;

/// An upgrade waiting for the app's answer.
struct Question {
    request: Request,
    port: u16,
    answer: oneshot::Sender<Verdict>,
}

impl Question {
    /// `{ method, url, headers, socket: { remoteAddress, remotePort } }`.
    fn request(&self, env: &Env) -> Result<Object<'static>> {
        let mut headers = Object::new(env)?;
        for (name, value) in self.request.headers_as_node_folds_them() {
            headers.set_named_property(name, value)?;
        }
        let mut socket = Object::new(env)?;
        socket.set_named_property("remoteAddress", self.request.address.to_string())?;
        socket.set_named_property("remotePort", u32::from(self.port))?;
        let mut request = Object::new(env)?;
        request.set_named_property("method", self.request.method.as_str())?;
        request.set_named_property("url", self.request.url.as_str())?;
        request.set_named_property("headers", headers)?;
        request.set_named_property("socket", socket)?;
        Ok(request)
    }
}

/// The native runtime's way to the app's `authenticate`.
pub struct Authenticator {
    questions: Arc<Mutex<Vec<Question>>>,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Authenticator {
    /// Made on the JS thread, where `authenticate` is called.
    pub fn new(env: &Env, authenticate: Rc<Authenticate>) -> Result<Self> {
        let questions: Arc<Mutex<Vec<Question>>> = Arc::default();
        let asked = questions.clone();
        let answer_all = env.create_function_from_closure::<(), (), _>("switchyardAuthenticate", move |ctx| {
            guard(|| {
                let waiting = std::mem::take(&mut *asked.lock());
                for question in waiting {
                    let request = question.request(ctx.env)?;
                    let answer = question.answer;
                    authentication::ask(ctx.env, &authenticate, "listen", request, move |_, verdict| {
                        // The client may be gone, and its question with it.
                        let _ = answer.send(verdict);
                        Ok(())
                    })?;
                }
                Ok(())
            })
        })?;
        // Weak, as the relay's own wake-up: a question does not keep the process alive.
        let wake = answer_all.build_threadsafe_function::<()>().callee_handled::<false>().weak::<true>().build()?;
        Ok(Self { questions, wake: Box::new(move || { wake.call((), ThreadsafeFunctionCallMode::NonBlocking); }) })
    }
}

impl Gatekeeper for Authenticator {
    /// The app's verdict on `request`, from `port` of its address; a failure to get one
    /// (the manager gone, `authenticate` unreachable) is [`Verdict::FAILED`].
    async fn ask(&self, request: &Request, port: u16) -> Verdict {
        let (answer, verdict) = oneshot::channel();
        self.questions.lock().push(Question { request: request.clone(), port, answer });
        (self.wake)();
        verdict.await.unwrap_or(Verdict::FAILED)
    }
}
