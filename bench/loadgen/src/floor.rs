//! `floor`: this machine's floor for the latency scenario. No relay can deliver a message
//! faster than the machine moves one byte from the load generator's core to the server's
//! and back, so the bench measures that beside the servers: a 1-byte TCP round trip over
//! loopback, to an echo thread pinned to the server's core, once every `--gap-us`. Each
//! round trip has the two cross-core wake-ups a relayed message has (the server's, then
//! the receiving client's) and nothing else. Prints one JSON line with the latencies in
//! the load generator's shape (`latencyUs`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Loopback TCP round trip between two cores: the floor of a relay's latency on this machine")]
struct Args {
    /// The core the echo thread runs on (the bench pins servers to 0).
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Microseconds between one round trip's end and the next one's start, so each is a
    /// wake-up from idle as at a fixed rate, not a busy ping-pong.
    #[arg(long, default_value_t = 1000)]
    gap_us: u64,
    #[arg(long, default_value_t = 5000)]
    duration_ms: u64,
}

/// Moves the calling thread to `core`; the caller's `taskset` mask does not bind it.
fn pin_to(core: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity get a
    // valid pointer to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn echo(listener: TcpListener, core: usize) -> std::io::Result<()> {
    pin_to(core)?;
    let (mut socket, _) = listener.accept()?;
    socket.set_nodelay(true)?;
    let mut byte = [0u8; 1];
    while socket.read(&mut byte)? == 1 {
        socket.write_all(&byte)?;
    }
    Ok(())
}

fn measure(args: &Args) -> std::io::Result<Histogram<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let core = args.server_core;
    let echoing = std::thread::spawn(move || echo(listener, core));
    let mut socket = TcpStream::connect(address)?;
    socket.set_nodelay(true)?;
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let (gap, end) = (Duration::from_micros(args.gap_us), Instant::now() + Duration::from_millis(args.duration_ms));
    let mut byte = [b'x'];
    while Instant::now() < end {
        let sent = Instant::now();
        socket.write_all(&byte)?;
        socket.read_exact(&mut byte)?;
        let _ = latency_us.record((sent.elapsed().as_micros() as u64).max(1));
        std::thread::sleep(gap);
    }
    drop(socket);
    echoing.join().expect("the echo thread")?;
    Ok(latency_us)
}

fn main() {
    let args = Args::parse();
    match measure(&args) {
        Ok(h) => println!(
            "{}",
            json!({
                "mode": "floor",
                "roundTrips": h.len(),
                "latencyUs": { "p50": h.value_at_quantile(0.50), "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999), "max": h.max() },
                "ok": true,
            })
        ),
        Err(err) => {
            println!("{}", json!({ "ok": false, "error": err.to_string() }));
            std::process::exit(1);
        }
    }
}
