//! `loadgen`: the load generator of `npm run bench`. It creates sessions over HTTP, opens
//! S x K WebSocket clients (tokio-tungstenite) and has every client send B-byte JSON
//! messages to its session, either as fast as a bounded window of undelivered messages
//! allows (throughput) or at a fixed total rate (latency). Every delivery is checked:
//! none lost, none out of order, none crossing sessions, none echoed to its sender. It
//! prints one JSON line and exits 1 if any check failed.
//!
//! `--idle` opens the clients and holds them, silent, so the caller can measure the
//! server's memory per idle connection: after creating the sessions it writes
//! `{"event":"sessions-created"}` to stderr and waits for a line on stdin, then after
//! connecting `{"event":"connected"}` and waits for another.
//!
//! Otherwise it writes `{"event":"measure-start"}` and `{"event":"measure-end"}` to stderr
//! around the measured time, so the caller can sample the server's CPU over exactly that
//! window; its own CPU use over the window is in its output.
//!
//! Members may instead be event-stream members (`--sse-receivers`): a raw HTTP/1.1
//! `GET <session>/events` read as Server-Sent Events, each `data:` event checked as a
//! WebSocket message is. With `--post-senders` the senders are such members and publish
//! by POST to the send URL their stream's welcome gave; `--senders` keeps the others of a
//! session to receiving only; `--source-ips` spreads these HTTP members over loopback
//! addresses, as a server sees users.
//!
//! `--ca FILE` makes every connection TLS (`wss://`, `https://`: rustls with ring,
//! trusting the CA certificates of that PEM file, offering ALPN `http/1.1`); the output
//! then says what the connections to the (first) `--server` negotiated (`tls`).
//!
//! Everything runs on one thread (a current-thread runtime), so the caller can pin the
//! load generator to one core and report that core's use.

mod event_stream;
mod message;
mod net;

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};
use tokio::task::LocalSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use event_stream::{EventStream, Poster, Welcome};
use message::Stamp;
use net::{Conn, Dialer};

#[derive(Parser, Debug, Clone)]
#[command(about = "WebSocket relay load generator: checks every delivery, prints one JSON line")]
struct Args {
    /// `host:port` of the server under test; several, comma-separated, for a cluster:
    /// client i connects to the (i mod n)-th, sessions are created on the first.
    #[arg(long, value_delimiter = ',', required = true)]
    server: Vec<String>,
    /// Speak Socket.IO (Engine.IO 4 over WebSocket): connect to the default namespace,
    /// send each message as event `m` and read it back from the event's argument.
    #[arg(long)]
    socketio: bool,
    /// `host:port` the create path is POSTed to, when sessions are created elsewhere than
    /// on the first `--server` (a relay whose port serves WebSockets only).
    #[arg(long)]
    create_server: Option<String>,
    /// Path that creates a session when POSTed to; the answer's JSON has `sessionId`.
    #[arg(long, default_value = "/sessions")]
    create_path: String,
    /// Path prefix of a session's WebSocket; the session id is appended.
    #[arg(long, default_value = "/session/")]
    ws_path: String,
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Clients per session.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Size of each message in bytes.
    #[arg(long, default_value_t = 100)]
    bytes: usize,
    /// Measured time, after the warm-up.
    #[arg(long, default_value_t = 5000)]
    duration_ms: u64,
    #[arg(long, default_value_t = 1000)]
    warmup_ms: u64,
    /// Throughput mode: messages a sender may have sent that not all its peers have yet.
    #[arg(long, default_value_t = 16)]
    window: u64,
    /// Latency mode: messages per second sent in total, at an even pace.
    #[arg(long)]
    rate: Option<f64>,
    /// Idle mode: open the clients, send nothing, hold them until stdin has a line.
    #[arg(long)]
    idle: bool,
    /// Clients per session that connect with `?positions=1`, so receive each message
    /// wrapped in a publication (the server must keep history).
    #[arg(long, default_value_t = 0)]
    positions_clients: usize,
    /// WebSocket handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Clients per session that send (the first ones); the others only receive. All of
    /// them unless given.
    #[arg(long)]
    senders: Option<usize>,
    /// Clients per session (the last ones) that are event-stream members instead of
    /// WebSockets: `GET <ws-path><session>/events`, read as Server-Sent Events.
    #[arg(long, default_value_t = 0)]
    sse_receivers: usize,
    /// Senders are event-stream members that publish by POST to their send URL, one
    /// message a request, each waiting for its 202 (and for room in the window).
    #[arg(long, conflicts_with_all = ["rate", "socketio"])]
    post_senders: bool,
    /// Event-stream members and POST senders connect from this many loopback addresses
    /// (127.0.0.1 to 127.0.0.N, member i from the (i mod N)-th), as a crowd of users
    /// would, so a server's caps per address (connections waiting for their request)
    /// are not all spent by one; for a server on loopback.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    source_ips: u8,
    /// Connect over TLS (WebSockets as `wss://`, session creation, event streams and
    /// POSTs as HTTPS), trusting the CA certificates in this PEM file.
    #[arg(long)]
    ca: Option<PathBuf>,
}

impl Args {
    /// Whether the client with index `local` in its session sends.
    fn sends(&self, local: usize) -> bool {
        local < self.senders.unwrap_or(self.clients)
    }

    /// Whether the client with index `local` in its session is an event-stream member.
    fn over_sse(&self, local: usize) -> bool {
        (self.post_senders && self.sends(local)) || local + self.sse_receivers >= self.clients
    }

    /// The local address client `index` connects from, when it is an event-stream member
    /// and the addresses are spread.
    fn source(&self, index: usize) -> Option<IpAddr> {
        (self.source_ips > 1).then(|| IpAddr::from([127, 0, 0, 1 + (index % usize::from(self.source_ips)) as u8]))
    }

    /// Why the options cannot make a run, if they cannot.
    fn conflict(&self) -> Option<&'static str> {
        if self.senders.is_some_and(|senders| senders > self.clients) || self.sse_receivers > self.clients {
            return Some("--senders and --sse-receivers count clients of a session: at most --clients");
        }
        if self.socketio && self.sse_receivers > 0 {
            return Some("Socket.IO has no event streams: --sse-receivers needs a switchyard server");
        }
        // Idle clients send nothing, by either transport.
        let sse_sender = !self.idle && (0..self.clients).any(|local| self.sends(local) && self.over_sse(local));
        (sse_sender && !self.post_senders).then_some("an event-stream member can only send by POST: add --post-senders, or fewer --sse-receivers")
    }
}

type Sink = SplitSink<WebSocketStream<Conn>, Message>;
type Source = SplitStream<WebSocketStream<Conn>>;

#[derive(Default)]
struct Errors {
    crossed: Cell<u64>,
    echoed: Cell<u64>,
    lost: Cell<u64>,
    out_of_order: Cell<u64>,
    disconnected: Cell<u64>,
    /// Sends by POST not answered 202.
    refused: Cell<u64>,
}

/// State shared by every client; single-threaded, hence `Cell`s.
struct Run {
    k: usize,
    socketio: bool,
    bytes: usize,
    started: Instant,
    /// Messages each client has sent.
    sent: Vec<Cell<u64>>,
    /// `next[r * k + l]`: the sequence number client `r` expects next from the member
    /// of its session with local index `l`.
    next: Vec<Cell<u64>>,
    /// A sender waiting for room in its window.
    room: Vec<Notify>,
    stopping: Cell<bool>,
    measuring: Cell<bool>,
    measured: Cell<u64>,
    latency_us: RefCell<Histogram<u64>>,
    errors: Errors,
}

impl Run {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The fewest messages of `sender` that any other member of its session has received.
    fn delivered_everywhere(&self, sender: usize) -> u64 {
        let (session, local) = (sender / self.k, sender % self.k);
        (0..self.k)
            .filter(|&l| l != local)
            .map(|l| self.next[(session * self.k + l) * self.k + local].get())
            .min()
            .unwrap_or(u64::MAX)
    }

    fn received(&self, me: usize, text: &[u8]) {
        let Some(Stamp { sender, seq, sent_us }) = message::decode(text) else { return };
        let sender = sender as usize;
        if sender == me {
            self.errors.echoed.set(self.errors.echoed.get() + 1);
            return;
        }
        if sender / self.k != me / self.k || sender >= self.sent.len() {
            self.errors.crossed.set(self.errors.crossed.get() + 1);
            return;
        }
        let next = &self.next[me * self.k + sender % self.k];
        if seq < next.get() {
            self.errors.out_of_order.set(self.errors.out_of_order.get() + 1);
            return;
        }
        if seq > next.get() {
            self.errors.lost.set(self.errors.lost.get() + seq - next.get());
        }
        next.set(seq + 1);
        self.room[sender].notify_one();
        if self.measuring.get() {
            self.measured.set(self.measured.get() + 1);
            let _ = self.latency_us.borrow_mut().record(self.now_us().saturating_sub(sent_us).max(1));
        }
    }
}

/// POSTs to the create path and returns the session id from the answer.
async fn create_session(args: &Args, dialer: &Dialer) -> Result<String, String> {
    let server = args.create_server.as_ref().unwrap_or(&args.server[0]);
    let mut stream = dialer.connect(server, None).await?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        args.create_path
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    // The body by its length, or to the close: a TLS server may close without a
    // close_notify, which reads as an error once the answer is in.
    let (head, mut body) = event_stream::read_head(&mut stream, Vec::new()).await?;
    let mut chunk = [0u8; 1024];
    while body.len() < head.content_length.unwrap_or(usize::MAX) {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(read) => body.extend_from_slice(&chunk[..read]),
            Err(_) if head.content_length.is_none() => break,
            Err(err) => return Err(err.to_string()),
        }
    }
    // Then to the server's close, so that the server, not the load generator, keeps the
    // connection in TIME_WAIT.
    while matches!(stream.read(&mut chunk).await, Ok(read) if read > 0) {}
    let answer = String::from_utf8_lossy(&body);
    if !(200..300).contains(&head.status) {
        return Err(format!("HTTP {}: {}", head.status, answer.trim()));
    }
    let body = &answer[answer.find('{').ok_or("no JSON in the answer")?..=answer.rfind('}').ok_or("no JSON")?];
    let json: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    json["sessionId"].as_str().map(str::to_owned).ok_or_else(|| format!("no sessionId in {body}"))
}

/// A connected member, of either transport.
enum Client {
    WebSocket(Sink, Source),
    EventStream(EventStream, Welcome),
}

/// Connects client `index` as its place in the session says: a WebSocket, or an event stream.
async fn connect(args: &Args, dialer: &Dialer, index: usize, session: &str) -> Result<Client, String> {
    let local = index % args.clients;
    let query = if local < args.positions_clients { "?positions=1" } else { "" };
    if args.over_sse(local) {
        let server = &args.server[index % args.server.len()];
        let (stream, welcome) = EventStream::open(dialer, server, args.source(index), &format!("{}{session}/events{query}", args.ws_path)).await?;
        return Ok(Client::EventStream(stream, welcome));
    }
    let (sink, source) = connect_websocket(args, dialer, index, session, query).await?;
    Ok(Client::WebSocket(sink, source))
}

async fn connect_websocket(args: &Args, dialer: &Dialer, index: usize, session: &str, query: &str) -> Result<(Sink, Source), String> {
    let server = &args.server[index % args.server.len()];
    let url = format!("{}://{server}{}{session}{query}", dialer.ws_scheme(), args.ws_path);
    // tungstenite zero-fills its whole read buffer before every read: the default 128 KiB
    // would make each small read cost a large memset, and the clients the bottleneck.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let conn = dialer.connect(server, None).await?;
    let (stream, _) = tokio_tungstenite::client_async_with_config(url, conn, Some(config)).await.map_err(|e| e.to_string())?;
    let (mut sink, mut source) = stream.split();
    if args.socketio {
        // Engine.IO's open packet, then Socket.IO's connect to "/" and its answer. Runs
        // are shorter than the server's ping interval, so its pings need no answer.
        expect_text(&mut source, "0").await?;
        sink.send(Message::text("40")).await.map_err(|e| e.to_string())?;
        expect_text(&mut source, "40").await?;
    }
    Ok((sink, source))
}

async fn expect_text(source: &mut Source, prefix: &str) -> Result<(), String> {
    match source.next().await {
        Some(Ok(Message::Text(text))) if text.starts_with(prefix) => Ok(()),
        other => Err(format!("expected a Socket.IO packet starting {prefix:?}, got {other:?}")),
    }
}

async fn receive(run: Rc<Run>, me: usize, mut source: Source) {
    while let Some(message) = source.next().await {
        match message {
            Ok(Message::Text(text)) => run.received(me, text.as_bytes()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if !run.stopping.get() {
        run.errors.disconnected.set(run.errors.disconnected.get() + 1);
    }
}

/// An event-stream member's stream: its events are messages as a WebSocket's are.
async fn receive_events(run: Rc<Run>, me: usize, mut stream: EventStream) {
    let mut on_event = |_name: &[u8], data: &[u8]| run.received(me, data);
    while stream.read(&mut on_event).await {}
    if !run.stopping.get() {
        run.errors.disconnected.set(run.errors.disconnected.get() + 1);
    }
}

/// The next message of client `me`, stamped now.
fn next_text(run: &Run, me: usize) -> String {
    let seq = run.sent[me].get();
    run.sent[me].set(seq + 1);
    message::encode(Stamp { sender: me as u64, seq, sent_us: run.now_us() }, run.bytes)
}

fn next_message(run: &Run, me: usize) -> Message {
    let text = next_text(run, me);
    Message::text(if run.socketio { format!(r#"42["m",{text}]"#) } else { text })
}

/// Sends by POST as the browser client does: one request in flight, carrying every
/// message the window has room for (one a line, application/x-ndjson); stops at the first
/// send not taken (counted as refused: its messages are then lost too).
async fn post_windowed(run: Rc<Run>, me: usize, mut poster: Poster, window: u64) {
    let mut batch = String::new();
    while !run.stopping.get() {
        let room = window.saturating_sub(run.sent[me].get().saturating_sub(run.delivered_everywhere(me)));
        if room == 0 {
            run.room[me].notified().await;
            continue;
        }
        batch.clear();
        for _ in 0..room {
            if !batch.is_empty() {
                batch.push('\n');
            }
            batch.push_str(&next_text(&run, me));
        }
        if let Err(err) = poster.post(batch.as_bytes()).await {
            run.errors.refused.set(run.errors.refused.get() + 1);
            eprintln!("{}", json!({ "sender": me, "error": err }));
            return;
        }
    }
}

/// Sends as fast as the window allows, many messages per flush.
async fn send_windowed(run: Rc<Run>, me: usize, mut sink: Sink, window: u64) -> Sink {
    while !run.stopping.get() {
        let in_flight = run.sent[me].get().saturating_sub(run.delivered_everywhere(me));
        let room = window.saturating_sub(in_flight);
        if room == 0 {
            run.room[me].notified().await;
            continue;
        }
        for _ in 0..room {
            if sink.feed(next_message(&run, me)).await.is_err() {
                return sink;
            }
        }
        if sink.flush().await.is_err() {
            return sink;
        }
    }
    sink
}

/// Sends one message every `period`, starting after `offset` to spread the senders.
async fn send_paced(run: Rc<Run>, me: usize, mut sink: Sink, period: Duration, offset: Duration) -> Sink {
    tokio::time::sleep(offset).await;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !run.stopping.get() {
        ticks.tick().await;
        if sink.send(next_message(&run, me)).await.is_err() {
            break;
        }
    }
    sink
}

/// CPU time this process has used, user and system.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Tells the caller where the run is, on stderr.
fn event(name: &str) {
    eprintln!("{}", json!({ "event": name }));
}

async fn read_line() {
    let mut line = String::new();
    let _ = tokio::io::BufReader::new(tokio::io::stdin()).read_line(&mut line).await;
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let ok = LocalSet::new().block_on(&runtime, run(args));
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run(args: Args) -> bool {
    if let Some(conflict) = args.conflict() {
        return fail(conflict);
    }
    let dialer = match Dialer::new(args.ca.as_deref()) {
        Ok(dialer) => Rc::new(dialer),
        Err(err) => return fail(&err),
    };
    let total = args.sessions * args.clients;
    let mut session_ids = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        match create_session(&args, &dialer).await {
            Ok(id) => session_ids.push(id),
            Err(err) => return fail(&format!("cannot create a session: {err}")),
        }
    }

    if args.idle {
        event("sessions-created");
        read_line().await;
    }
    let gate = Rc::new(Semaphore::new(args.connect_concurrency));
    let connecting: Vec<_> = (0..total)
        .map(|i| {
            let (args, dialer, gate, session) = (args.clone(), dialer.clone(), gate.clone(), session_ids[i / args.clients].clone());
            tokio::task::spawn_local(async move {
                let _permit = gate.acquire().await;
                connect(&args, &dialer, i, &session).await
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(total);
    for handle in connecting {
        match handle.await.expect("connect task") {
            Ok(client) => clients.push(client),
            Err(err) => return fail(&format!("cannot connect client {}: {err}", clients.len())),
        }
    }
    if args.idle {
        event("connected");
        read_line().await;
        println!("{}", json!({ "mode": "idle", "connections": total, "tls": tls_report(&dialer, &args), "ok": true }));
        return true;
    }
    // Let every server finish registering its last clients before anyone sends.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let run = Rc::new(Run {
        k: args.clients,
        socketio: args.socketio,
        bytes: args.bytes.max(message::MIN_LEN),
        started: Instant::now(),
        sent: (0..total).map(|_| Cell::new(0)).collect(),
        next: (0..total * args.clients).map(|_| Cell::new(0)).collect(),
        room: (0..total).map(|_| Notify::new()).collect(),
        stopping: Cell::new(false),
        measuring: Cell::new(false),
        measured: Cell::new(0),
        latency_us: RefCell::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")),
        errors: Errors::default(),
    });
    let mut senders = Vec::with_capacity(total);
    let mut posters = Vec::new();
    // The sinks of WebSocket clients that only receive, closed with the others at the end.
    let mut sinks = Vec::with_capacity(total);
    for (me, client) in clients.into_iter().enumerate() {
        let sends = args.sends(me % args.clients);
        let (sink, source) = match client {
            Client::WebSocket(sink, source) => (sink, source),
            Client::EventStream(stream, welcome) => {
                tokio::task::spawn_local(receive_events(run.clone(), me, stream));
                if sends {
                    let poster = Poster::new(dialer.clone(), &args.server[me % args.server.len()], args.source(me), &welcome);
                    posters.push(tokio::task::spawn_local(post_windowed(run.clone(), me, poster, args.window.max(1))));
                }
                continue;
            }
        };
        tokio::task::spawn_local(receive(run.clone(), me, source));
        if !sends {
            sinks.push(sink);
            continue;
        }
        let run = run.clone();
        senders.push(match args.rate {
            Some(rate) => {
                let period = Duration::from_secs_f64(total as f64 / rate);
                let offset = period.mul_f64(me as f64 / total as f64);
                tokio::task::spawn_local(send_paced(run, me, sink, period, offset))
            }
            None => tokio::task::spawn_local(send_windowed(run, me, sink, args.window.max(1))),
        });
    }

    tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
    run.latency_us.borrow_mut().reset();
    run.measuring.set(true);
    event("measure-start");
    let (measure_start, cpu_start) = (Instant::now(), cpu_time());
    tokio::time::sleep(Duration::from_millis(args.duration_ms)).await;
    run.measuring.set(false);
    let (measured_for, cpu_used) = (measure_start.elapsed(), cpu_time() - cpu_start);
    event("measure-end");
    run.stopping.set(true);
    for notify in &run.room {
        notify.notify_one();
    }
    for sender in senders {
        sinks.push(sender.await.expect("sender task"));
    }
    for poster in posters {
        poster.await.expect("POST sender task");
    }

    // Drain: every message sent must reach every other member of its session.
    let expected = |run: &Run| -> u64 {
        (0..total).map(|s| run.sent[s].get().saturating_sub(run.delivered_everywhere(s)) * (run.k as u64 - 1)).sum()
    };
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while expected(&run) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let undelivered: u64 = (0..total)
        .map(|r| {
            let (session, local) = (r / run.k, r % run.k);
            (0..run.k)
                .filter(|&l| l != local)
                .map(|l| run.sent[session * run.k + l].get().saturating_sub(run.next[r * run.k + l].get()))
                .sum::<u64>()
        })
        .sum();
    for mut sink in sinks {
        let _ = sink.close().await;
    }

    let errors = &run.errors;
    let lost = errors.lost.get() + undelivered;
    let ok = lost == 0
        && errors.crossed.get() == 0
        && errors.echoed.get() == 0
        && errors.out_of_order.get() == 0
        && errors.disconnected.get() == 0
        && errors.refused.get() == 0;
    let histogram = run.latency_us.borrow();
    let sent: u64 = run.sent.iter().map(Cell::get).sum();
    println!(
        "{}",
        json!({
            "mode": if args.rate.is_some() { "rate" } else { "throughput" },
            "sessions": args.sessions,
            "clients": args.clients,
            "sseMembers": (0..args.clients).filter(|&local| args.over_sse(local)).count() * args.sessions,
            "senders": (0..args.clients).filter(|&local| args.sends(local)).count() * args.sessions,
            "bytes": run.bytes,
            "tls": tls_report(&dialer, &args),
            "measuredMs": measured_for.as_millis() as u64,
            "sent": sent,
            "deliveries": run.measured.get(),
            "deliveriesPerSec": run.measured.get() as f64 / measured_for.as_secs_f64(),
            "cpuPercent": 100.0 * cpu_used.as_secs_f64() / measured_for.as_secs_f64(),
            "latencyUs": {
                "p50": histogram.value_at_quantile(0.50),
                "p99": histogram.value_at_quantile(0.99),
                "p999": histogram.value_at_quantile(0.999),
                "max": histogram.max(),
            },
            "errors": {
                "lost": lost,
                "crossed": errors.crossed.get(),
                "echoed": errors.echoed.get(),
                "outOfOrder": errors.out_of_order.get(),
                "disconnected": errors.disconnected.get(),
                "refused": errors.refused.get(),
            },
            "ok": ok,
        })
    );
    ok
}

/// What the TLS connections to the first `--server` negotiated; null for a plain run.
fn tls_report(dialer: &Dialer, args: &Args) -> serde_json::Value {
    match dialer.negotiated(&args.server[0]) {
        Some(n) => json!({ "version": n.version, "cipherSuite": n.cipher_suite, "alpn": n.alpn }),
        None => serde_json::Value::Null,
    }
}

fn fail(message: &str) -> bool {
    println!("{}", json!({ "ok": false, "error": message }));
    false
}
