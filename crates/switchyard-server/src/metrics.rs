//! A relay's Prometheus metrics, encoded by prometheus-client in the text exposition
//! format: what the binary's `/metrics` serves and `manager.metrics()` returns.
//!
//! The relay keeps its counters in atomics on its own path; each scrape reads a snapshot
//! of them through a [`Collector`], so nothing is registered or locked per message.

use std::fmt::Error;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use switchyard_core::{Health, HistogramSnapshot, Relay, Stats, Transport};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A gauge only the host knows (the binary's pending handshakes, its uptime).
#[derive(Debug)]
pub struct HostGauge {
    /// The metric's name, without the `switchyard_` prefix it is given.
    pub name: &'static str,
    /// The metric's `# HELP` text.
    pub help: &'static str,
    /// The gauge's value now.
    pub value: f64,
}

/// The relay's metrics (prefixed `switchyard_`), the host's gauges, and the process's
/// (`process_`, where the platform tells them).
pub fn render(relay: &Relay, health: Health, host: Vec<HostGauge>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    registry
        .sub_registry_with_prefix("switchyard")
        .register_collector(Box::new(RelayCollector { stats: relay.stats(), health, host }));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

#[derive(Debug)]
struct RelayCollector {
    stats: Stats,
    health: Health,
    host: Vec<HostGauge>,
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A histogram, with bounds and sum divided by `per_unit` (a million, for microseconds to
/// seconds). The encoder takes counts per bucket and writes them cumulatively.
fn histogram(encoder: &mut DescriptorEncoder, name: &str, help: &str, unit: Unit, snapshot: &HistogramSnapshot, per_unit: f64) -> Result<(), Error> {
    let bounds = snapshot.bounds.iter().map(|&bound| bound as f64 / per_unit).chain([f64::INFINITY]);
    let buckets: Vec<(f64, u64)> = bounds.zip(snapshot.counts.iter().copied()).collect();
    let mut metric = encoder.encode_descriptor(name, help, Some(&unit), MetricType::Histogram)?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(snapshot.sum as f64 / per_unit, snapshot.count(), &buckets, None)
}

impl Collector for RelayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), Error> {
        let s = &self.stats;
        gauge(&mut encoder, "sessions", "Sessions that exist now.", s.active_sessions as f64)?;
        {
            let mut family = encoder.encode_descriptor("connections", "Open WebSocket connections, by transport.", None, MetricType::Gauge)?;
            for transport in Transport::ALL {
                let labels = [("transport", transport.as_str())];
                ConstGauge::new(s.open_connections(transport) as f64).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor("connections_opened", "Connections let into the relay, by transport.", None, MetricType::Counter)?;
            for &(transport, n) in &s.opened {
                ConstCounter::new(n).encode(family.encode_family(&[("transport", transport.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "connections_closed",
                "Connections ended, by transport and WebSocket close code (1006: lost without a close).",
                None,
                MetricType::Counter,
            )?;
            for &(transport, code, n) in &s.closed {
                let code = code.to_string();
                let labels = [("transport", transport.as_str()), ("code", code.as_str())];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        counter(&mut encoder, "messages_received", "Messages received from clients.", s.messages_received)?;
        counter(&mut encoder, "messages_relayed", "Deliveries of relayed messages: one message to three members counts three.", s.messages_relayed)?;
        counter(&mut encoder, "messages_dropped", "Deliveries dropped because an outbox was full.", s.messages_dropped)?;
        counter(&mut encoder, "messages_invalid", "Text messages that were not valid protocol messages.", s.messages_invalid)?;
        counter(&mut encoder, "passive_updates_dropped", "state_update messages from passive members, dropped.", s.passive_updates_dropped)?;
        counter(&mut encoder, "bytes_received", "Message bytes received from clients.", s.bytes_received)?;
        counter(&mut encoder, "bytes_sent", "Message bytes queued to clients.", s.bytes_sent)?;
        counter(&mut encoder, "handshake_failures", "Upgrades refused at or before the handshake.", s.handshake_failures)?;
        counter(&mut encoder, "slow_consumer_closes", "Connections closed with 1013 because their outbox stayed full.", s.slow_consumer_closes)?;
        counter(&mut encoder, "requests", "Requests handed to the request handler.", s.requests)?;
        counter(&mut encoder, "acks", "Messages acknowledged with ACK.", s.acks)?;
        counter(&mut encoder, "nacks", "Messages refused with NACK.", s.nacks)?;
        counter(&mut encoder, "forbidden", "Joins and messages refused for identity.", s.forbidden)?;
        counter(&mut encoder, "rate_limited", "Messages and connections refused for their rate.", s.rate_limited)?;
        counter(&mut encoder, "hook_questions", "Questions asked of the application's hooks or backend.", s.hook_questions)?;
        counter(&mut encoder, "hook_refusals", "Joins and messages the application refused.", s.hook_refusals)?;
        counter(&mut encoder, "hook_failures", "Questions the application did not answer (failed, timed out, out of reach).", s.hook_failures)?;
        gauge(&mut encoder, "users", "Distinct users with a connection.", s.users as f64)?;
        gauge(&mut encoder, "registrations", "Awareness registrations: windows with a case open.", s.registrations as f64)?;
        gauge(&mut encoder, "channels", "Channels with members.", s.channels as f64)?;
        gauge(&mut encoder, "history_bytes", "Bytes the session streams keep together.", s.history_bytes as f64)?;
        gauge(&mut encoder, "unhealthy_connections", "Connections whose ping has waited over half the ping interval.", self.health.unhealthy_connections as f64)?;
        if let Some(ms) = self.health.average_latency_ms {
            gauge(&mut encoder, "ping_round_trip_seconds", "The mean of each connection's last ping round trip.", ms / 1000.0)?;
        }
        histogram(&mut encoder, "message_size", "Sizes of the messages received from clients.", Unit::Bytes, &s.frame_sizes, 1.0)?;
        histogram(
            &mut encoder,
            "relay_latency",
            "For one write to a socket in 16, how long its oldest message had waited since it was routed.",
            Unit::Seconds,
            &s.relay_latency,
            1e6,
        )?;
        histogram(&mut encoder, "hook_latency", "How long the application took to answer a hook.", Unit::Seconds, &s.hook_latency, 1e6)?;
        for host in &self.host {
            gauge(&mut encoder, host.name, host.help, host.value)?;
        }
        Ok(())
    }
}

/// The standard `process_` metrics, read from `/proc` on Linux; none elsewhere.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    #[cfg(target_os = "linux")]
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), Error> {
        let Ok(me) = procfs::process::Process::myself() else { return Ok(()) };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let page = procfs::page_size();
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor("process_cpu_seconds", "User and system CPU time spent.", None, MetricType::Counter)?)?;
            gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size.", (stat.rss * page) as f64)?;
            gauge(&mut encoder, "process_virtual_memory_bytes", "Virtual memory size.", stat.vsize as f64)?;
            gauge(&mut encoder, "process_threads", "OS threads in the process.", stat.num_threads as f64)?;
            if let Ok(boot) = procfs::boot_time_secs() {
                gauge(&mut encoder, "process_start_time_seconds", "Start time since the Unix epoch.", boot as f64 + stat.starttime as f64 / ticks)?;
            }
        }
        if let Ok(fds) = me.fd_count() {
            gauge(&mut encoder, "process_open_fds", "Open file descriptors.", fds as f64)?;
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn encode(&self, _encoder: DescriptorEncoder) -> Result<(), Error> {
        Ok(())
    }
}
