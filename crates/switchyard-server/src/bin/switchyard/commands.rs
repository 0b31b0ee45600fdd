//! The subcommands: `config init` and `config check`, `token create` and `token check`.
//! Each prints what it made or found and returns the process's exit code: 0 done, 1 a
//! token refused, 2 a config or a key that is wrong.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use switchyard_core::schema::{DefaultValue, Kind, SETTINGS};

use crate::cli::{Args, TokenCreate};
use crate::config_file::{self, ConfigFile};

/// `config init`: every setting, commented out at its default, with what it does.
pub fn config_init(file: Option<&Path>) -> ExitCode {
    let text = default_config();
    let Some(path) = file else {
        print!("{text}");
        return ExitCode::SUCCESS;
    };
    let written = std::fs::OpenOptions::new().write(true).create_new(true).open(path).and_then(|mut out| out.write_all(text.as_bytes()));
    match written {
        Ok(()) => {
            eprintln!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("switchyard: cannot write {}: {err}", path.display());
            ExitCode::from(2)
        }
    }
}

/// The text of `config init`.
pub fn default_config() -> String {
    let mut text = String::from(
        "# switchyard.toml: settings of the `switchyard` server (`switchyard --config switchyard.toml`).\n\
         # Every flag of `switchyard --help` is a key here, spelled with _ for -. Environment\n\
         # variables and flags override what this file says. Uncomment a line to change it.\n",
    );
    let command = Args::command();
    for arg in command.get_arguments().filter(|arg| config_file::is_key(arg)) {
        let long = arg.get_long().expect("a key has a long flag");
        let Some(setting) = SETTINGS.iter().find(|s| s.flag.is_some_and(|flag| flag.long == long)) else { continue };
        let help = arg.get_long_help().or(arg.get_help()).map(|help| help.to_string()).unwrap_or_default();
        text.push('\n');
        for line in help.lines() {
            let _ = writeln!(text, "# {line}");
        }
        let env = arg.get_env().map(|env| env.to_string_lossy().into_owned()).unwrap_or_default();
        let value = match setting.binary_default().unwrap_or(setting.default) {
            DefaultValue::Number(n) => n.to_string(),
            DefaultValue::Bool(b) => b.to_string(),
            DefaultValue::Text(text) if setting.kind == Kind::List => format!("{:?}", text.split(',').collect::<Vec<_>>()),
            DefaultValue::Text(text) => format!("{text:?}"),
            DefaultValue::Said(said) => {
                let _ = writeln!(text, "# Default: {said}.");
                placeholder(setting.kind).into()
            }
            DefaultValue::Unset => {
                let _ = writeln!(text, "# Unset by default.");
                placeholder(setting.kind).into()
            }
        };
        let _ = writeln!(text, "# (environment: {env})\n# {} = {value}", config_file::key_of(long));
    }
    text
}

/// An example value of a kind, for a setting unset by default.
fn placeholder(kind: Kind) -> &'static str {
    match kind {
        Kind::List => "[]",
        Kind::Bool => "false",
        Kind::Text | Kind::Choice(_) | Kind::Function => "\"\"",
        Kind::Millis | Kind::Seconds | Kind::Bytes | Kind::Count | Kind::Rate => "1",
    }
}

/// `config check FILE`: its keys and their values, then the server they make (`args`,
/// parsed with the file in place).
pub fn config_check(args: &Args, file: &ConfigFile) -> ExitCode {
    let path = file.path.display();
    for problem in &file.problems {
        eprintln!("{path}: {problem}");
    }
    if !file.problems.is_empty() {
        return ExitCode::from(2);
    }
    if let Err(err) = crate::checked(args) {
        eprintln!("{path}: {err}");
        return ExitCode::from(2);
    }
    println!("{path}: ok ({} settings)", file.settings.len());
    ExitCode::SUCCESS
}

/// `token create`: a JWT the server configured so would admit.
pub fn token_create(args: &Args, create: &TokenCreate) -> ExitCode {
    match make_token(args, create) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("switchyard: {err}");
            ExitCode::from(2)
        }
    }
}

fn make_token(args: &Args, create: &TokenCreate) -> Result<String, String> {
    let algorithm = args.jwt_algorithms.first().copied();
    let (key, algorithm) = match (&args.jwt_secret, &create.key) {
        (_, Some(path)) => {
            let pem = std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            let algorithm = algorithm.unwrap_or(Algorithm::RS256);
            let key = match algorithm {
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return Err(format!("--key is a private key; {algorithm:?} signs with --jwt-secret")),
                _ => EncodingKey::from_rsa_pem(&pem),
            };
            (key.map_err(|err| format!("{} cannot be read as a {algorithm:?} private key: {err}", path.display()))?, algorithm)
        }
        (Some(secret), None) if !secret.is_empty() => (EncodingKey::from_secret(secret.as_bytes()), algorithm.unwrap_or(Algorithm::HS256)),
        (_, None) => {
            return Err("no key to sign with: give --jwt-secret (or JWT_SECRET, or jwt_secret in --config), or --key with a private key".into())
        }
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let mut claims = Map::new();
    claims.insert(args.jwt_user_claim.clone(), json!(create.sub));
    if let Some(org) = &create.org {
        claims.insert(args.jwt_organization_claim.clone().unwrap_or_else(|| "org".into()), json!(org));
    }
    if let Some(channel) = &create.channel {
        claims.insert("channel".into(), json!(channel));
    }
    if let Some(issuer) = &args.jwt_issuer {
        claims.insert("iss".into(), json!(issuer));
    }
    if let Some(audience) = &args.jwt_audience {
        claims.insert("aud".into(), json!(audience));
    }
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + create.ttl.as_secs().max(1)));
    for claim in &create.claims {
        let (name, value) = claim.split_once('=').ok_or_else(|| format!("--claim {claim:?}: write NAME=VALUE"))?;
        claims.insert(name.to_owned(), serde_json::from_str(value).unwrap_or_else(|_| json!(value)));
    }
    if create.org.is_some() && args.jwt_organization_claim.is_none() {
        eprintln!("note: the server reads no organization from tokens until --jwt-organization-claim names the claim (here `org`)");
    }
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).map_err(|err| format!("cannot sign the token: {err}"))
}

/// `token check TOKEN`: the verdict of the server configured so.
pub fn token_check(args: &Args, token: &str) -> ExitCode {
    let verifier = match args.verifier() {
        Ok(Some(auth)) => auth.verifier,
        Ok(None) => {
            eprintln!("switchyard: no key to check with: give --jwt-secret, --jwt-public-key or --jwks (or their variables, or a --config file)");
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("switchyard: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(claims) = unverified_claims(token) {
        println!("{}", serde_json::to_string_pretty(&claims).unwrap_or_default());
    }
    match verifier.verify(token) {
        Ok(identity) => {
            let or_none = |value: &Option<String>| value.clone().unwrap_or_else(|| "(none)".into());
            println!("valid: user {}, organization {}", or_none(&identity.user_id), or_none(&identity.organization_id));
            if let Some(expires_at) = identity.expires_at {
                let left = expires_at.saturating_sub(switchyard_core::now()) / 1000;
                println!("expires in {}", humantime::format_duration(std::time::Duration::from_secs(left)));
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("refused: {err}");
            ExitCode::from(1)
        }
    }
}

/// The token's claims, read without checking its signature (printed beside the verdict).
fn unverified_claims(token: &str) -> Option<Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}
