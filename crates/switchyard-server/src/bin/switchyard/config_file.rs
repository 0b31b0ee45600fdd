//! The config file (`--config switchyard.toml`): every flag of the command line is a key,
//! spelled with `_` for `-` (`max_message_bytes = 65536`). A value is checked with its
//! flag's own parser, so a bad one is named by its key, and then stands where clap looks
//! after the flags: it becomes the flag's environment variable unless the environment
//! sets that already. So a flag overrides the environment, which overrides the file,
//! which overrides the defaults, and what each flag accepts is said once, in `cli.rs`.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, CommandFactory};

use crate::cli::Args;

/// A key of the file that cannot be used.
pub enum Problem {
    /// No flag has this name.
    Unknown {
        /// The key.
        key: String,
        /// The key it resembles, when one does.
        like: Option<String>,
    },
    /// Its flag refuses the value.
    Invalid {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unknown { key, like: Some(like) } => write!(f, "unknown key `{key}` (did you mean `{like}`?)"),
            Problem::Unknown { key, like: None } => write!(f, "unknown key `{key}`"),
            Problem::Invalid { key, reason } => write!(f, "`{key}`: {reason}"),
        }
    }
}

/// A file read and checked: the environment it sets, and its problems.
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Each good key's flag's environment variable, and its value as the flag takes it.
    pub settings: Vec<(OsString, String)>,
    /// Keys that cannot be used.
    pub problems: Vec<Problem>,
}

/// Arguments that are not settings a file could hold.
const NOT_KEYS: [&str; 3] = ["help", "version", "config"];

impl ConfigFile {
    /// Reads and checks `path`; `Err` when it cannot be read or is not TOML.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| format!("{} is not TOML: {}", path.display(), err.to_string().trim_end()))?;
        let command = Args::command();
        let mut file = ConfigFile { path: path.to_owned(), settings: Vec::new(), problems: Vec::new() };
        for (key, value) in table {
            let arg = command.get_arguments().find(|arg| is_key(arg) && arg.get_long().map(key_of).as_deref() == Some(key.as_str()));
            let Some(arg) = arg else {
                let like = resembling(&command, &key);
                file.problems.push(Problem::Unknown { key, like });
                continue;
            };
            match text_of(&command, arg, value) {
                Ok(text) => file.settings.push((arg.get_env().expect("every setting has its variable").to_owned(), text)),
                Err(reason) => file.problems.push(Problem::Invalid { key, reason }),
            }
        }
        Ok(file)
    }

    /// Puts its settings where clap reads them, under what the environment sets itself.
    pub fn export(&self) {
        for (env, value) in &self.settings {
            if std::env::var_os(env).is_none() {
                // Before any thread is started: nothing else reads the environment yet.
                std::env::set_var(env, value);
            }
        }
    }
}

/// A flag's key in the file: `max-message-bytes` is `max_message_bytes`.
pub fn key_of(long: &str) -> String {
    long.replace('-', "_")
}

/// Whether the file may set this argument.
pub fn is_key(arg: &Arg) -> bool {
    !NOT_KEYS.contains(&arg.get_id().as_str()) && arg.get_long().is_some()
}

/// The closest key to a misspelled one.
fn resembling(command: &Command, key: &str) -> Option<String> {
    let wanted = key_of(&key.to_ascii_lowercase());
    command
        .get_arguments()
        .filter(|arg| is_key(arg))
        .filter_map(|arg| arg.get_long().map(key_of))
        .map(|known| (strsim::jaro_winkler(&wanted, &known), known))
        .filter(|(likeness, _)| *likeness > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, known)| known)
}

/// The value as its flag takes it on the command line, checked by the flag's parser.
fn text_of(command: &Command, arg: &Arg, value: toml::Value) -> Result<String, String> {
    let switch = matches!(arg.get_action(), ArgAction::SetTrue);
    let list = arg.get_value_delimiter();
    let pieces: Vec<String> = match value {
        toml::Value::Boolean(on) => vec![on.to_string()],
        _ if switch => return Err("expected true or false".into()),
        toml::Value::String(text) => vec![text],
        toml::Value::Integer(n) => vec![n.to_string()],
        toml::Value::Float(x) => vec![x.to_string()],
        toml::Value::Array(items) if list.is_some() => items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(text) => Ok(text),
                toml::Value::Integer(n) => Ok(n.to_string()),
                other => Err(format!("expected strings in the list, not {}", other.type_str())),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("expected {}, not {}", if list.is_some() { "a string or a list of strings" } else { "a single value" }, other.type_str())),
    };
    let flag = arg.get_long().expect("a key has a long flag");
    for piece in pieces.iter().filter(|_| !switch) {
        // The whole command parses it: an error that another flag is then required is
        // not this value's (the file may hold that flag too).
        let parsed = command.clone().try_get_matches_from([OsString::from("switchyard"), OsString::from(format!("--{flag}={piece}"))]);
        match parsed {
            Err(err) if err.kind() != clap::error::ErrorKind::MissingRequiredArgument => {
                let err = err.to_string();
                let first = err.lines().next().unwrap_or_default();
                return Err(first.strip_prefix("error: ").unwrap_or(first).to_owned());
            }
            _ => {}
        }
    }
    Ok(pieces.join(&list.map_or(String::new(), String::from)))
}

/// The config file named on the command line (`--config FILE`, `--config=FILE`), or by
/// `config check FILE`, or by `SWITCHYARD_CONFIG`: found before clap parses, because what
/// the file holds is part of what clap parses.
pub fn named(argv: &[OsString]) -> Option<PathBuf> {
    let mut words = argv.iter().skip(1).map(|word| word.to_string_lossy());
    let mut previous: [Option<String>; 2] = [None, None];
    while let Some(word) = words.next() {
        if word == "--config" {
            return words.next().map(|path| PathBuf::from(path.as_ref()));
        }
        if let Some(path) = word.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
        if previous[0].as_deref() == Some("config") && previous[1].as_deref() == Some("check") && !word.starts_with('-') {
            return Some(PathBuf::from(word.as_ref()));
        }
        previous = [previous[1].take(), Some(word.into_owned())];
    }
    std::env::var_os("SWITCHYARD_CONFIG").map(PathBuf::from)
}
