//! Renders the schema as `docs/configuration.md`, the configuration reference: the
//! example `options-reference` prints it, and a test fails when the page in the
//! repository differs from it.

use std::fmt::Write;

use super::{DefaultValue, Kind, Range, Setting, SETTINGS};

const INTRODUCTION: &str = "\
# Configuration reference

<!-- Generated from crates/switchyard-core/src/schema.rs: do not edit. After changing a setting there, run
     cargo run -q -p switchyard-core --example options-reference > docs/configuration.md -->

Every setting of the `switchyard` binary (a flag, and the environment variable that sets
it too) and of the Node addon (an option of `new RelaySessionManager(config)`, by its
path in that object). A setting with no flag is the addon's only; one with no JS option
is the binary's only. Times are milliseconds and sizes bytes. The addon refuses a value
outside the bounds with a `TypeError` naming the option; the binary prints why and exits
with code 2. Where the binary's default or bounds differ from the addon's, the binary's
are given in brackets. Each flag is also a key of the binary's `--config` file, its name
with `_` for `-` (`max_message_bytes = 65536`); flags override the environment, which
overrides the file (see [the standalone server](operations/standalone-server.md#a-config-file)).

| JS option | flag | environment | kind | default | bounds | meaning |
| --- | --- | --- | --- | --- | --- | --- |
";

const CONSTANTS: &str = "
## Limits that stay constants

These bound what the protocol or the code allows rather than how a deployment runs, so
they are not settings:

- Session ids: at most 128 characters (and generated ones 22); channel names at most 128
  bytes; awareness user, window and case ids at most 256 bytes; JSON nested at most 100
  deep; at most 1024 bytes of a message that is not JSON repeated in its error. They are
  part of the protocol (`docs/protocol.md`), which clients are written against.
- A session's `expiresIn`: at most 2^50 ms, so its end stays a date every client can
  write.
- A stream keeps at most 100 000 publications (`history.size`'s bound), and a client
  resuming names at most 16 earlier connections.
- HTTP: a request head of at most 8 KiB and 64 headers (431 past them); pages of
  `GET /v1/sessions` of 100, at most 1000; a history long poll waits at most 60 000 ms.
- Shutdown: a close handshake gets 5 s (the binary's whole shutdown is
  `--shutdown-timeout`).
- The Redis link: pipelines of at most 1024 messages; reconnecting after 100 ms, doubling
  to 2 s; a deleted session's id remembered a day.
- A full outbox refuses a frame once its socket has taken nothing for 1000 ms, or at
  twice its bound: the slow-consumer rule's grace, the same for both transports.
- Tuning that changes no behaviour a client can see: read and write buffer sizes, write
  batches, how a session's member list grows, the tick (at most 1000 ms), the deflate
  level, histogram buckets.
";

/// The whole page, as `docs/configuration.md` holds it.
pub fn reference_page() -> String {
    let mut page = String::from(INTRODUCTION);
    for setting in SETTINGS {
        row(&mut page, setting);
    }
    page.push_str(CONSTANTS);
    page
}

fn row(page: &mut String, setting: &Setting) {
    let code = |text: &str| format!("`{text}`");
    let js = setting.js.map_or("—".into(), code);
    let (flag, env) = match setting.flag {
        Some(flag) => {
            let long = format!("--{}", flag.long);
            let names = match flag.short {
                Some(short) => format!("`-{short}`, `{long}`"),
                None => code(&long),
            };
            (names, code(flag.env))
        }
        None => ("—".into(), "—".into()),
    };
    let default = with_binary(default(setting.default), setting.flag.and_then(|f| f.default).map(default));
    let bounds = match setting.range {
        Some(range) => with_binary(bounds(range), setting.flag.and_then(|f| f.range).map(bounds)),
        None => "—".into(),
    };
    let kind = kind(setting.kind);
    writeln!(page, "| {js} | {flag} | {env} | {kind} | {default} | {bounds} | {} |", setting.doc).expect("a String takes any write");
}

/// The setting's value, then the binary's where it differs.
fn with_binary(value: String, binary: Option<String>) -> String {
    match binary {
        Some(binary) if binary != value => format!("{value} [{binary}]"),
        _ => value,
    }
}

fn default(value: DefaultValue) -> String {
    match value {
        DefaultValue::Unset => "none".into(),
        DefaultValue::Number(n) => n.to_string(),
        DefaultValue::Bool(b) => b.to_string(),
        DefaultValue::Text(text) => format!("`{text}`"),
        DefaultValue::Said(words) => words.into(),
    }
}

fn bounds(range: Range) -> String {
    if range.max == u64::MAX {
        format!("{} or more", range.min)
    } else {
        format!("{} to {}", number(range.min), number(range.max))
    }
}

/// Large bounds as the powers of two they are.
fn number(n: u64) -> String {
    match n.checked_add(1) {
        _ if n < 1 << 20 => n.to_string(),
        _ if n.is_power_of_two() => format!("2^{}", n.trailing_zeros()),
        Some(next) if next.is_power_of_two() => format!("2^{} - 1", next.trailing_zeros()),
        _ => n.to_string(),
    }
}

fn kind(kind: Kind) -> String {
    match kind {
        Kind::Bool => "boolean".into(),
        Kind::Millis => "ms".into(),
        Kind::Seconds => "seconds".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Count => "count".into(),
        Kind::Rate => "number > 0".into(),
        Kind::Text => "text".into(),
        Kind::Choice(names) => names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" or "),
        Kind::List => "list of text".into(),
        Kind::Function => "function".into(),
    }
}
