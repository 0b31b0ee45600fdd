//! `switchyard`: the relay as a standalone service. Parses the command line, serves
//! WebSockets and the HTTP API on one port, ticks the relay's timers, and on SIGINT,
//! SIGTERM or SIGHUP, or when the npm launcher that started it is gone, stops accepting,
//! closes every socket with 1001 and exits 0 within 5 seconds.

mod accept;
mod cli;
mod http;
mod launcher;
mod log_events;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use switchyard_core::{close_code, Config, ConnectionRefusal, EventSink, Hooks, HostSettings, NoHooks};
use switchyard_server::admission::TokenAuth;
use switchyard_server::engine::Engine;
use switchyard_server::hooks::TokenChecks;
use switchyard_server::proxy::Proxy;
use switchyard_server::webhooks::{Webhooks, WithWebhooks};
use switchyard_server::native_runtime::NativeRuntime;
use switchyard_server::{now, Spawner};
use tokio::net::{TcpListener, TcpSocket};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Many small allocations live as long as a connection (its task, its socket's
/// registration, its place in the relay); mimalloc keeps them without glibc's
/// per-allocation overhead and the fragmentation aligned ones cause there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let launcher = launcher::claim();
    let args = cli::Args::parse();
    let checked = || -> Result<_, String> {
        let config = args.relay_config();
        config.validate().map_err(|err| err.to_string())?;
        let auth = args.verifier()?;
        let proxy_options = args.proxy_options().map_err(|err| err.to_string())?;
        let webhook_options = args.webhook_options().map_err(|err| err.to_string())?;
        Ok((config, auth, proxy_options, webhook_options))
    };
    // A bad flag exits 2, saying what is wrong with it, before anything starts.
    let (config, auth, proxy_options, webhook_options) = match checked() {
        Ok(checked) => checked,
        Err(err) => {
            eprintln!("switchyard: {err}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let launcher = launcher.unwrap_or_else(|why| {
        warn!("{why}: the server will not stop with its launcher");
        None
    });
    let runtime = match NativeRuntime::start(args.compression(), args.threads.map(|n| n.get())) {
        Ok(runtime) => runtime,
        Err(err) => {
            error!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The runtime's own threads drive its sockets and timers; this one only waits for
    // the signal to stop.
    let spawner = runtime.spawner.clone();
    let proxy = proxy_options.is_on().then(|| Proxy::new(proxy_options));
    let webhooks = webhook_options.map(Webhooks::new);
    if let Some(webhooks) = &webhooks {
        webhooks.start(&spawner.runtime);
    }
    let app = Application { proxy, webhooks };
    spawner.runtime.block_on(serve(args, config, auth, app, launcher, spawner.clone()))
}

/// The app's backend, as the binary reaches it: the proxy and the webhooks.
struct Application {
    proxy: Option<Arc<Proxy>>,
    webhooks: Option<Arc<Webhooks>>,
}

async fn serve(args: cli::Args, config: Config, auth: Option<TokenAuth>, application: Application, launcher: Option<launcher::Launcher>, spawner: Spawner) -> ExitCode {
    let Application { proxy, webhooks } = application;
    let events = Arc::new(log_events::LogEvents { proxy: proxy.clone(), ..Default::default() });
    let sink: Arc<dyn EventSink> = match &webhooks {
        Some(webhooks) => Arc::new(WithWebhooks { inner: events.clone(), webhooks: webhooks.clone() }),
        None => events.clone(),
    };
    let auth = auth.map(Arc::new);
    let app_hooks: Arc<dyn Hooks> = match &proxy {
        Some(proxy) => proxy.clone(),
        None => Arc::new(NoHooks),
    };
    let hooks = Arc::new(TokenChecks::new(auth.clone(), app_hooks));
    let engine = match Engine::new(config.clone(), sink, hooks, args.redis_options()) {
        Ok(engine) => Arc::new(engine),
        Err(err) => {
            error!("{err}");
            return ExitCode::from(2);
        }
    };
    if let Some(proxy) = &proxy {
        proxy.start(&engine.relay, spawner.runtime.clone());
    }
    if let (Some(webhooks), Some(cluster)) = (&webhooks, &engine.cluster) {
        webhooks.follow_cluster(cluster.clone());
    }
    let relay = engine.relay.clone();
    let link = engine.join_cluster();
    let shutdown_timeout = Duration::from_millis(args.shutdown_timeout.get());
    let address = SocketAddr::new(args.host, args.port);
    let listener = match listen(address, args.listen_backlog) {
        Ok(listener) => listener,
        Err(err) => {
            error!("cannot listen on {address}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let waiting = switchyard_server::waiting::Waiting::new(args.handshake_limits());
    let settings = HostSettings {
        auth_required: auth.as_ref().map(|auth| auth.required),
        compression_threshold: args.compression().map(|compression| compression.threshold),
        threads: args.threads.map(|n| n.get()),
        hooks: engine.relay.decides(),
        webhooks: webhooks.as_ref().map(|webhooks| webhooks.report()),
        proxy: proxy.as_ref().map(|proxy| proxy.report()),
    };
    let app = Arc::new(http::App {
        engine: engine.clone(),
        settings,
        spawner: spawner.clone(),
        admin_token: args.admin_token.clone(),
        auth,
        started: Instant::now(),
        waiting: waiting.clone(),
        events,
        proxy,
        webhooks,
    });
    info!(
        address = %listener.local_addr().map_or(address, |a| a),
        admin = if args.admin_token.is_some() { "bearer token" } else { "loopback only" },
        "switchyard listening"
    );

    let tick_every = Duration::from_millis(config.tick_interval_ms());
    let ticker = tokio::spawn({
        let relay = relay.clone();
        async move {
            let mut interval = tokio::time::interval(tick_every);
            loop {
                interval.tick().await;
                relay.tick(now());
            }
        }
    });

    let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let relay = relay.clone();
        accept::serve(listener, app, waiting, move || relay.handshake_failed(), accepting_stopped)
    });

    let cause = shutdown_cause(launcher).await;
    info!(cause, "shutting down");
    let _ = stop_accepting.send(());
    ticker.abort();
    relay.shutdown(close_code::GOING_AWAY, ConnectionRefusal::ShuttingDown.reason(), now());
    engine.leave_cluster(link).await;
    spawner.tasks.close();
    let drained = tokio::time::timeout(shutdown_timeout, async {
        let _ = server.await;
        spawner.tasks.wait().await;
    })
    .await;
    if drained.is_err() {
        info!("some connections did not finish closing in time; dropping them");
    }
    ExitCode::SUCCESS
}

/// `backlog`: connections the kernel may hold for `accept` at once (`--listen-backlog`).
/// The kernel's usual 128 lets a burst of clients (or an attacker's sockets) overflow it,
/// and it then drops handshakes it already answered; it caps this at `net.core.somaxconn`.
fn listen(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// What stops the server: a signal, or the end of the launcher that started it.
#[cfg(unix)]
async fn shutdown_cause(launcher: Option<launcher::Launcher>) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        error!("cannot listen for signals; stop the server with SIGKILL");
        launcher::gone(launcher).await;
        return LAUNCHER_GONE;
    };
    // Started with SIGHUP ignored (`nohup`), the server goes on ignoring it.
    let mut hangup = if hangup_ignored() { None } else { signal(SignalKind::hangup()).ok() };
    let hung_up = async {
        match &mut hangup {
            Some(hangup) => {
                hangup.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
        () = hung_up => "SIGHUP",
        () = launcher::gone(launcher) => LAUNCHER_GONE,
    }
}

/// Whether SIGHUP is ignored, as `nohup` leaves it for the process it starts.
#[cfg(unix)]
fn hangup_ignored() -> bool {
    // SAFETY: with no new action given, sigaction only writes the current one into ours.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut current) == 0 && current.sa_sigaction == libc::SIG_IGN
    }
}

/// Windows has no SIGTERM: Ctrl+C (and Ctrl+Break) is how a console process is asked to stop.
#[cfg(not(unix))]
async fn shutdown_cause(launcher: Option<launcher::Launcher>) -> &'static str {
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            error!("cannot listen for Ctrl+C; stop the server by ending its process");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = interrupted => "Ctrl+C",
        () = launcher::gone(launcher) => LAUNCHER_GONE,
    }
}

const LAUNCHER_GONE: &str = "the launcher is gone";
