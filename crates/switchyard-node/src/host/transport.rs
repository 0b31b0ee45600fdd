//! The host's side of the native transport and of clusters: the tokio runtime, sockets
//! taken from Node, and the link to Redis. None of it is in the WebAssembly build.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use napi::bindgen_prelude::{JsObjectValue, Object};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Error, Result, Status};
use switchyard_core::{ConnectionRefusal, Identity, Route};
use switchyard_server::native_runtime::NativeRuntime;
use switchyard_server::path_pattern::PathPattern;
use switchyard_server::relay_port::RelayPort;
use switchyard_server::tls::{Tls, TlsPair};
use switchyard_server::event_stream::native::{http_answer, response_head, serve, EventStream};
use switchyard_server::event_stream::{self, Endpoint};
use switchyard_server::listener::answer;
use switchyard_server::Accepted;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Host, Lifecycle};
use crate::guard;
use crate::js_types::ListenAddress;
use crate::authentication::Authenticate;
use crate::native::{self, Authenticator, Takeover};
use crate::request::UpgradeRequest;

/// A port `listen()` opened; dropping it stops accepting, and handshakes under way are
/// refused. Until then, `_open` (a thread-safe function never called) keeps Node's event
/// loop alive, as a listening `http.Server` does: a script that only listens would
/// otherwise exit at once.
pub struct Port {
    _stop: DropGuard,
    _open: ThreadsafeFunction<(), (), (), Status, false>,
    /// Its certificate and key, when it serves TLS.
    pub tls: Option<Arc<Tls>>,
}

/// A `listen()` port's pair, read and checked; the error says which file and why.
pub fn start_tls(pair: TlsPair) -> Result<Arc<Tls>> {
    Tls::new(pair).map(Arc::new).map_err(|err| Error::from_reason(format!("listen: TLS: {err}")))
}

impl Host {
    /// `reloadTls()`: every TLS port's pair read again, or replaced by `given`.
    pub fn reload_tls(&self, given: Option<TlsPair>) -> Result<()> {
        let ports = self.ports.borrow();
        let mut serving = ports.iter().filter_map(|port| port.tls.as_ref()).peekable();
        if serving.peek().is_none() {
            return Err(Error::from_reason("reloadTls: no listen() port serves TLS"));
        }
        for tls in serving {
            let reloaded = match &given {
                Some(pair) => tls.replace(pair.clone()),
                None => tls.reload(),
            };
            reloaded.map_err(|err| Error::from_reason(format!("reloadTls: {err}; the pair in use stays")))?;
        }
        Ok(())
    }

    /// Starts what runs on the native runtime beside the sockets: the link to the
    /// cluster's Redis (whose wake-up lets what other nodes send reach bridge sockets),
    /// the backend proxy's calls and the webhooks' sender. Nothing without them.
    pub fn join_cluster(self: &Rc<Self>, env: &Env) -> Result<()> {
        if self.engine.cluster.is_some() {
            let native = self.native(env)?;
            let _entered = native.spawner.runtime.enter();
            self.engine.join_cluster();
        }
        if let Some(proxy) = &self.proxy {
            proxy.start(&self.engine.relay, self.native(env)?.spawner.runtime.clone());
        }
        if let Some(webhooks) = &self.webhooks {
            if let Some(cluster) = &self.engine.cluster {
                webhooks.follow_cluster(cluster.clone());
            }
            webhooks.start(&self.native(env)?.spawner.runtime);
        }
        Ok(())
    }

    /// The native runtime, started on first use together with the wake-up that lets its
    /// threads reach this one.
    fn native(self: &Rc<Self>, env: &Env) -> Result<&NativeRuntime> {
        if let Some(native) = self.native.get() {
            return Ok(native);
        }
        let runtime = NativeRuntime::start(self.compression, self.native_threads)
            .map_err(|err| Error::new(Status::GenericFailure, format!("cannot start the native transport: {err}")))?;
        let host = Rc::downgrade(self);
        let drain = env.create_function_from_closure::<(), (), _>("switchyardWake", move |ctx| {
            guard(|| host.upgrade().map_or(Ok(()), |host| host.pump(ctx.env)))
        })?;
        // Weak: a pending wake-up does not keep the process alive.
        let wake = drain.build_threadsafe_function::<()>().callee_handled::<false>().weak::<true>().build()?;
        self.pending.set_wake(Box::new(move || {
            wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }));
        Ok(self.native.get_or_init(|| runtime))
    }

    /// Opens a port of the relay's own (`listen()`), served on the native runtime until
    /// `stop()`.
    pub fn listen(
        self: &Rc<Self>,
        env: &Env,
        host: &str,
        port: u16,
        pattern: PathPattern,
        authenticate: Option<Rc<Authenticate>>,
        tls: Option<Arc<Tls>>,
    ) -> Result<ListenAddress> {
        let native = self.native(env)?;
        let gatekeeper = authenticate.map(|authenticate| Authenticator::new(env, authenticate)).transpose()?;
        let stop = CancellationToken::new();
        let relay_port = RelayPort {
            engine: self.engine.clone(),
            auth: self.auth.clone(),
            spawner: native.spawner.clone(),
            pattern,
            gatekeeper,
            stop: stop.clone(),
            tls: tls.clone(),
        };
        let address = relay_port
            .open(host, port)
            .map_err(|err| Error::new(Status::GenericFailure, format!("cannot listen on {host}:{port}: {err}")))?;
        let open = env.create_function_from_closure::<(), (), _>("switchyardPort", |_| Ok(()))?;
        let open = open.build_threadsafe_function::<()>().callee_handled::<false>().build()?;
        self.ports.borrow_mut().push(Port { _stop: stop.drop_guard(), _open: open, tls });
        Ok(ListenAddress { host: address.ip().to_string(), port: u32::from(address.port()) })
    }

    /// Takes a `net.Socket` from Node's `upgrade` event into the native transport.
    /// Returns whether it joined; a bad handshake is answered with 400 and `false`.
    pub fn adopt_native(
        self: &Rc<Self>,
        env: &Env,
        socket: &Object,
        request: &Object,
        route: Route,
        identity: Identity,
        head: Bytes,
    ) -> Result<bool> {
        native::available()?;
        let request = UpgradeRequest::read(request)?;
        let (identity, protocol) = match self.check_upgrade(Some(&request), identity) {
            Ok(admitted) => (admitted.identity, admitted.protocol),
            Err(refused) => {
                native::respond_and_close(socket, refused.http_answer())?;
                return Ok(false);
            }
        };
        let native = self.native(env)?;
        let deflate = native.spawner.negotiate(request.header("sec-websocket-extensions"));
        let extensions = deflate.map(|deflate| deflate.response());
        let (stream, preface, head) = match native::take_over(socket, &request, head, protocol, extensions.as_deref())? {
            Takeover::Taken { stream, preface, head } => (stream, preface, head),
            Takeover::BadHandshake => {
                self.engine.relay.handshake_failed();
                return Ok(false);
            }
        };
        let io = native
            .stream(stream)
            .map_err(|err| Error::new(Status::GenericFailure, format!("cannot adopt the socket: {err}")))?;
        let accepted = Accepted { io, preface, head, route, identity, deflate };
        let admitted = if self.lifecycle.get() == Lifecycle::Stopped {
            native.spawner.refuse(accepted, ConnectionRefusal::ShuttingDown);
            false
        } else {
            self.engine.admit(&native.spawner, accepted)
        };
        self.pump(env)?;
        Ok(admitted)
    }

    /// Takes an event stream's request from Node's HTTP server (`attach()`, beside its
    /// WebSocket path) into the native transport: its socket becomes Rust's, which admits
    /// it and writes the stream, or the refusal, itself. `given` is what `authenticate`
    /// said (`None`: refused, 401).
    pub fn adopt_event_stream(self: &Rc<Self>, env: &Env, request: &Object, pattern: &PathPattern, given: Option<Identity>) -> Result<()> {
        native::available()?;
        let mut read = UpgradeRequest::read(request)?;
        let socket: Object = request.get_named_property("socket")?;
        let native = self.native(env)?;
        let io = native
            .stream(native::take_socket(&socket)?)
            .map_err(|err| Error::new(Status::GenericFailure, format!("cannot adopt the socket: {err}")))?;
        let admitted = match super::event_stream_route(&read.url, Some(pattern)) {
            Some((Endpoint::Events, _)) if self.lifecycle.get() == Lifecycle::Stopped => Err(ConnectionRefusal::ShuttingDown),
            Some((Endpoint::Events, route)) => given.ok_or(ConnectionRefusal::Unauthorized).and_then(|given| {
                read.url = event_stream::resume_url(&read.url, read.header("last-event-id")).into_owned();
                self.check_upgrade(Some(&read), given).map(|admitted| (route, admitted.identity)).map_err(|refused| refused.refusal())
            }),
            _ => Err(ConnectionRefusal::SessionNotFound),
        };
        let (route, identity) = match admitted {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let (status, code) = event_stream::refusal_status(refusal);
                native.spawner.runtime.spawn(answer(io, http_answer(status, code, &refusal.to_string(), false)));
                return Ok(());
            }
        };
        let (engine, send_url) = (self.engine.clone(), event_stream::send_url(&read.url));
        native.spawner.tasks.spawn_on(
            async move {
                match EventStream::open(&engine, route, identity, send_url).await {
                    Ok(stream) => serve(io, response_head(), stream).await,
                    Err(refusal) => {
                        let (status, code) = event_stream::refusal_status(refusal);
                        answer(io, http_answer(status, code, &refusal.to_string(), false)).await;
                    }
                }
            },
            &native.spawner.runtime,
        );
        self.pump(env)
    }
}
