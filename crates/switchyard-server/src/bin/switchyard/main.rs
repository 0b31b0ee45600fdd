//! `switchyard`: the relay as a standalone service. Reads its config file and command
//! line, serves WebSockets and the HTTP API on one port (with TLS when given a
//! certificate, read again on SIGHUP), ticks the relay's timers, and on SIGINT or
//! SIGTERM, or when the npm launcher that started it is gone, drains for the shutdown
//! grace (not ready, new connections refused, open ones closed with 1012 a few at a
//! time), then stops accepting, closes every socket left with 1001 and exits 0.
//! `config` and `token` subcommands do their work and exit instead.

mod accept;
mod cli;
mod commands;
mod config_file;
mod http;
mod launcher;
mod log_events;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use switchyard_core::{close_code, Config, ConnectionRefusal, EventSink, Hooks, HostSettings, NoHooks};
use cli::{Command, ConfigCommand, TokenCommand};
use config_file::{ConfigFile, Problem};
use switchyard_server::admission::TokenAuth;
use switchyard_server::engine::Engine;
use switchyard_server::hooks::TokenChecks;
use switchyard_server::proxy::Proxy;
use switchyard_server::webhooks::{Webhooks, WithWebhooks};
use switchyard_server::native_runtime::NativeRuntime;
use switchyard_server::proxy::ProxyOptions;
use switchyard_server::tls::Tls;
use switchyard_server::webhooks::WebhookOptions;
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
    let argv: Vec<OsString> = std::env::args_os().collect();
    let file = match config_file::named(&argv).map(|path| ConfigFile::read(&path)).transpose() {
        Ok(file) => file,
        Err(err) => {
            eprintln!("switchyard: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(file) = &file {
        file.export();
    }
    let args = cli::Args::parse_from(&argv);
    match &args.command {
        Some(Command::Config(ConfigCommand::Init { file })) => return commands::config_init(file.as_deref()),
        Some(Command::Config(ConfigCommand::Check { .. })) => return commands::config_check(&args, file.as_ref().expect("named by the command")),
        Some(Command::Token(TokenCommand::Create(create))) => return commands::token_create(&args, create),
        Some(Command::Token(TokenCommand::Check { token })) => return commands::token_check(&args, token),
        None => {}
    }
    if let Some(file) = &file {
        let mut stop = false;
        for problem in &file.problems {
            let fatal = args.strict || matches!(problem, Problem::Invalid { .. });
            let unless = if fatal { "" } else { " (ignored; --strict makes this an error)" };
            eprintln!("switchyard: {}: {problem}{unless}", file.path.display());
            stop |= fatal;
        }
        if stop {
            return ExitCode::from(2);
        }
    }
    // A bad flag exits 2, saying what is wrong with it, before anything starts.
    let checked = match checked(&args) {
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
    let Checked { config, auth, proxy_options, webhook_options, tls } = checked;
    let proxy = proxy_options.is_on().then(|| Proxy::new(proxy_options));
    let webhooks = webhook_options.map(Webhooks::new);
    if let Some(webhooks) = &webhooks {
        webhooks.start(&spawner.runtime);
    }
    let app = Application { proxy, webhooks, tls: tls.map(Arc::new) };
    spawner.runtime.block_on(serve(args, config, auth, app, launcher, spawner.clone()))
}

/// What the flags make, each checked.
pub struct Checked {
    config: Config,
    auth: Option<TokenAuth>,
    proxy_options: ProxyOptions,
    webhook_options: Option<WebhookOptions>,
    tls: Option<Tls>,
}

/// Checks what the flags (and the config file under them) make: what a server would
/// start with, or what is wrong, with the flag or file it comes from.
pub fn checked(args: &cli::Args) -> Result<Checked, String> {
    let config = args.relay_config();
    config.validate().map_err(|err| err.to_string())?;
    let auth = args.verifier()?;
    let proxy_options = args.proxy_options().map_err(|err| err.to_string())?;
    let webhook_options = args.webhook_options().map_err(|err| err.to_string())?;
    let tls = args.tls_pair().map(Tls::new).transpose().map_err(|err| format!("TLS: {err}"))?;
    Ok(Checked { config, auth, proxy_options, webhook_options, tls })
}

/// What the binary runs beside the relay: the app's backend (the proxy, the webhooks),
/// and the certificate its port serves.
struct Application {
    proxy: Option<Arc<Proxy>>,
    webhooks: Option<Arc<Webhooks>>,
    tls: Option<Arc<Tls>>,
}

async fn serve(args: cli::Args, config: Config, auth: Option<TokenAuth>, application: Application, launcher: Option<launcher::Launcher>, spawner: Spawner) -> ExitCode {
    let Application { proxy, webhooks, tls } = application;
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
        tls,
        draining: AtomicBool::new(false),
    });
    info!(
        address = %listener.local_addr().map_or(address, |a| a),
        admin = if args.admin_token.is_some() { "bearer token" } else { "loopback only" },
        tls = app.tls.is_some(),
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
        accept::serve(listener, app.clone(), waiting, move || relay.handshake_failed(), accepting_stopped)
    });

    let mut signals = Signals::new(launcher);
    let cause = loop {
        match signals.next().await {
            Signal::Reload => reload(app.tls.as_deref()),
            Signal::Stop(cause) => break cause,
        }
    };
    info!(cause, "shutting down");
    app.draining.store(true, Ordering::Relaxed);
    let grace = Duration::from_millis(args.shutdown_grace);
    if !grace.is_zero() {
        tokio::select! {
            () = drain(&relay, grace) => {}
            cause = signals.next_stop() => info!(cause, "draining cut short"),
        }
    }
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

/// SIGHUP: the TLS certificate and key read again. Open connections keep the pair they
/// were accepted with; a pair that cannot serve leaves the old one in use.
fn reload(tls: Option<&Tls>) {
    match tls.map(Tls::reload) {
        Some(Ok(())) => info!("SIGHUP: reloaded the TLS certificate and key"),
        Some(Err(err)) => warn!(%err, "SIGHUP: kept the TLS certificate and key in use"),
        None => info!("SIGHUP: nothing to reload (no --tls-cert)"),
    }
}

/// The drain of `--shutdown-grace`: every connection open now is closed with 1012, spread
/// evenly over `grace`, so that their reconnects reach the other nodes a few at a time;
/// returns when `grace` is over.
async fn drain(relay: &switchyard_core::Relay, grace: Duration) {
    let open = relay.connection_ids();
    info!(connections = open.len(), grace_ms = grace.as_millis() as u64, "draining");
    let start = tokio::time::Instant::now();
    let count = open.len() as f64;
    for (index, conn) in open.into_iter().enumerate() {
        tokio::time::sleep_until(start + grace.mul_f64(index as f64 / count)).await;
        relay.end_connection(conn, close_code::SERVICE_RESTART, "Service restart", now());
    }
    tokio::time::sleep_until(start + grace).await;
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

/// What a signal asks of the server.
enum Signal {
    /// SIGHUP: read the TLS files again.
    Reload,
    /// Stop, for this cause.
    Stop(&'static str),
}

/// The signals the server heeds, and the end of the launcher that started it.
struct Signals {
    #[cfg(unix)]
    listening: Option<UnixSignals>,
    launcher: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

#[cfg(unix)]
struct UnixSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    /// `None` when started with SIGHUP ignored (`nohup`): it goes on ignoring it.
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new(launcher: Option<launcher::Launcher>) -> Self {
        let launcher = Box::pin(launcher::gone(launcher));
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listening = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(interrupt), Ok(terminate)) => {
                    let hangup = if hangup_ignored() { None } else { signal(SignalKind::hangup()).ok() };
                    Some(UnixSignals { interrupt, terminate, hangup })
                }
                _ => {
                    error!("cannot listen for signals; stop the server with SIGKILL");
                    None
                }
            };
            Self { listening, launcher }
        }
        #[cfg(not(unix))]
        Self { launcher }
    }

    /// The next signal, or the launcher's end.
    #[cfg(unix)]
    async fn next(&mut self) -> Signal {
        let Some(listening) = &mut self.listening else {
            (&mut self.launcher).await;
            return Signal::Stop(LAUNCHER_GONE);
        };
        let hung_up = async {
            match &mut listening.hangup {
                Some(hangup) => {
                    hangup.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = listening.interrupt.recv() => Signal::Stop("SIGINT"),
            _ = listening.terminate.recv() => Signal::Stop("SIGTERM"),
            () = hung_up => Signal::Reload,
            () = &mut self.launcher => Signal::Stop(LAUNCHER_GONE),
        }
    }

    /// Windows has no SIGTERM: Ctrl+C (and Ctrl+Break) is how a console process is asked to stop.
    #[cfg(not(unix))]
    async fn next(&mut self) -> Signal {
        let interrupted = async {
            if tokio::signal::ctrl_c().await.is_err() {
                error!("cannot listen for Ctrl+C; stop the server by ending its process");
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = interrupted => Signal::Stop("Ctrl+C"),
            () = &mut self.launcher => Signal::Stop(LAUNCHER_GONE),
        }
    }

    /// The next signal to stop; a SIGHUP meanwhile is of no use to a server draining.
    async fn next_stop(&mut self) -> &'static str {
        loop {
            if let Signal::Stop(cause) = self.next().await {
                return cause;
            }
        }
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

const LAUNCHER_GONE: &str = "the launcher is gone";
