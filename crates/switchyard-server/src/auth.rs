//! Token auth on upgrade: finds a JWT in the upgrade request and verifies it with the
//! `jsonwebtoken` crate; its claims become the connection's identity.
//!
//! A token travels in `?token=`, in `Authorization: Bearer`, or, for browsers that can
//! set neither header, as a WebSocket subprotocol: the client offers
//! [`TOKEN_SUBPROTOCOL`] and the token, and the server answers with the first.

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use switchyard_core::{Identity, Rate};

/// The subprotocol that says "the other one is my token".
pub const TOKEN_SUBPROTOCOL: &str = "switchyard.jwt";

/// Where the keys come from.
pub enum Keys {
    /// HMAC (HS256, HS384, HS512).
    Secret(Vec<u8>),
    /// An RSA, EC or Ed25519 public key in PEM.
    PublicKeyPem(Vec<u8>),
    /// A JWKS document; the token's `kid` picks the key.
    Jwks(JwkSet),
}

/// How tokens are verified: the keys, the algorithms, and what the claims must say.
pub struct JwtConfig {
    /// The keys tokens are signed with.
    pub keys: Keys,
    /// Empty for the default of the keys: HS256 for a secret, RS256 otherwise.
    pub algorithms: Vec<Algorithm>,
    /// The `iss` a token must have; `None` accepts any issuer.
    pub issuer: Option<String>,
    /// The `aud` a token must have; `None` leaves the audience unchecked.
    pub audience: Option<String>,
    /// The claim naming the user (`sub` by default).
    pub user_claim: String,
    /// The claim naming the organization; `None`: tokens give none.
    pub organization_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            keys: Keys::Secret(Vec::new()),
            algorithms: Vec::new(),
            issuer: None,
            audience: None,
            user_claim: "sub".into(),
            organization_claim: None,
            leeway_seconds: 0,
        }
    }
}

/// Why a token was refused (HTTP 401, or close 1008 "Unauthorized" in bridge mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token, where one is required.
    Missing,
    /// The token is past its `exp`.
    Expired,
    /// The token is before its `nbf`.
    NotYetValid,
    /// The signature does not match the key.
    BadSignature,
    /// The token's `iss` is not the configured issuer.
    WrongIssuer,
    /// The token's `aud` is not the configured audience.
    WrongAudience,
    /// No JWKS key matches the token's `kid` (or it has none and the JWKS holds several).
    UnknownKey,
    /// Anything else wrong with the token (malformed, no `exp`, an algorithm not allowed).
    Invalid(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("A token is required (?token=, Authorization: Bearer, or the switchyard.jwt subprotocol)"),
            AuthError::Expired => f.write_str("The token has expired"),
            AuthError::NotYetValid => f.write_str("The token is not valid yet"),
            AuthError::BadSignature => f.write_str("The token's signature is not valid"),
            AuthError::WrongIssuer => f.write_str("The token's issuer is not the expected one"),
            AuthError::WrongAudience => f.write_str("The token's audience is not the expected one"),
            AuthError::UnknownKey => f.write_str("No key matches the token's kid"),
            AuthError::Invalid(reason) => write!(f, "The token is not valid: {reason}"),
        }
    }
}

impl std::error::Error for AuthError {}

fn from_jwt(err: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        _ => AuthError::Invalid(err.to_string()),
    }
}

/// The keys, ready to verify with.
enum Decoding {
    One(DecodingKey),
    ByKid(HashMap<String, DecodingKey>),
}

/// Checks tokens against one configuration.
pub struct Verifier {
    decoding: Decoding,
    validation: Validation,
    user_claim: String,
    organization_claim: Option<String>,
}

fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Parses an algorithm name as JWT headers write it (`HS256`, `RS256`, `ES256`, `EdDSA`).
pub fn algorithm(name: &str) -> Result<Algorithm, String> {
    name.parse().map_err(|_| format!("unknown JWT algorithm {name:?}"))
}

impl Verifier {
    /// Reads the keys and checks that they fit the algorithms; the error says what is wrong.
    pub fn new(config: JwtConfig) -> Result<Self, String> {
        let hmac = matches!(config.keys, Keys::Secret(_));
        let algorithms = if config.algorithms.is_empty() {
            vec![if hmac { Algorithm::HS256 } else { Algorithm::RS256 }]
        } else {
            config.algorithms
        };
        if let Some(wrong) = algorithms.iter().find(|a| is_hmac(**a) != hmac) {
            return Err(format!(
                "algorithm {wrong:?} does not fit the key: a secret is for HS256/HS384/HS512, a public key or JWKS for the others"
            ));
        }
        let decoding = match config.keys {
            Keys::Secret(secret) if secret.is_empty() => return Err("the JWT secret must not be empty".into()),
            Keys::Secret(secret) => Decoding::One(DecodingKey::from_secret(&secret)),
            Keys::PublicKeyPem(pem) => {
                if let Some(other) = algorithms.iter().find(|a| a.family() != algorithms[0].family()) {
                    return Err(format!("algorithms {:?} and {other:?} need different kinds of key; one PEM key is of one kind", algorithms[0]));
                }
                let key = match algorithms[0] {
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                };
                Decoding::One(key.map_err(|err| format!("the public key cannot be read as {:?} PEM: {err}", algorithms[0]))?)
            }
            Keys::Jwks(set) => {
                let mut keys = HashMap::new();
                for (index, jwk) in set.keys.iter().enumerate() {
                    let kid = jwk.common.key_id.clone().unwrap_or_else(|| index.to_string());
                    let key = DecodingKey::from_jwk(jwk).map_err(|err| format!("JWKS key {kid:?} cannot be used: {err}"))?;
                    keys.insert(kid, key);
                }
                if keys.is_empty() {
                    return Err("the JWKS has no keys".into());
                }
                Decoding::ByKid(keys)
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = config.leeway_seconds;
        validation.validate_nbf = true;
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Self { decoding, validation, user_claim: config.user_claim, organization_claim: config.organization_claim })
    }

    /// Verifies a token; its claims become an identity: the user and organization from
    /// their claims, a `rateLimit` claim (`{ messagesPerSecond, burst }`) as the
    /// connection's tier, and every claim as its metadata.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = decode_header(token).map_err(from_jwt)?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid(format!("the algorithm {:?} is not allowed", header.alg)));
        }
        let key = match &self.decoding {
            Decoding::One(key) => key,
            Decoding::ByKid(keys) => match header.kid {
                Some(kid) => keys.get(&kid).ok_or(AuthError::UnknownKey)?,
                None if keys.len() == 1 => keys.values().next().expect("one key"),
                None => return Err(AuthError::UnknownKey),
            },
        };
        // jsonwebtoken wants every allowed algorithm to fit the key, and a JWKS may
        // hold keys of several kinds: validate against the token's own algorithm.
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let claims: Map<String, Value> = decode(token, key, &validation).map_err(from_jwt)?.claims;
        let text = |claim: &str| match claims.get(claim) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let rate_limit = claims.get("rateLimit").and_then(|tier| {
            let rate = Rate { per_second: tier.get("messagesPerSecond")?.as_f64()?, burst: tier.get("burst")?.as_f64()? };
            rate.check("rateLimit").is_ok().then_some(rate)
        });
        Ok(Identity {
            user_id: text(&self.user_claim),
            organization_id: self.organization_claim.as_deref().and_then(text),
            client_id: None,
            metadata: Some(Value::Object(claims.clone())),
            rate_limit,
            resume: Default::default(),
            expires_at: claims.get("exp").and_then(Value::as_u64).map(|exp| exp.saturating_mul(1000)),
        })
    }
}

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The URL's `token` query parameter.
    Query,
    /// An `Authorization: Bearer` header.
    Authorization,
    /// The 101 answer must name [`TOKEN_SUBPROTOCOL`].
    Subprotocol,
}

/// The token of an `Authorization: Bearer <token>` header's value. The scheme's name is
/// case-insensitive (RFC 7235 section 2.1), so `bearer` and `BEARER` are read too.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Finds a token in an upgrade request: `url` is its path and query, `header` looks a
/// header up by its lower-case name.
pub fn find_token<'a>(url: &'a str, header: impl Fn(&str) -> Option<&'a str>) -> Option<(&'a str, TokenSource)> {
    let query = url.split_once('?').map(|(_, q)| q.split('#').next().unwrap_or_default());
    if let Some(token) = query.and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token="))).filter(|t| !t.is_empty()) {
        return Some((token, TokenSource::Query));
    }
    if let Some(token) = header("authorization").and_then(bearer_token) {
        return Some((token, TokenSource::Authorization));
    }
    let protocols: Vec<&str> = header("sec-websocket-protocol")?.split(',').map(str::trim).collect();
    if !protocols.contains(&TOKEN_SUBPROTOCOL) {
        return None;
    }
    let token = protocols.into_iter().find(|p| *p != TOKEN_SUBPROTOCOL && !p.is_empty())?;
    Some((token, TokenSource::Subprotocol))
}

/// Whether a connection may be let in, and as whom: `Ok(None)` for an anonymous one when
/// tokens are not required.
pub fn authenticate<'a>(
    verifier: &Verifier,
    required: bool,
    url: &'a str,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<(Identity, TokenSource)>, AuthError> {
    match find_token(url, header) {
        Some((token, source)) => verifier.verify(token).map(|identity| Some((identity, source))),
        None if required => Err(AuthError::Missing),
        None => Ok(None),
    }
}


/// Compares without stopping at the first difference, so timing does not reveal a prefix
/// of a secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"a secret long enough for HS256 tests";

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn token(claims: Value) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn verifier(issuer: Option<&str>, audience: Option<&str>) -> Verifier {
        Verifier::new(JwtConfig {
            keys: Keys::Secret(SECRET.to_vec()),
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
            organization_claim: Some("org".into()),
            ..JwtConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_valid_token_becomes_an_identity() {
        let claims = json!({"sub":"alice","org":"acme","exp":now() + 60,"rateLimit":{"messagesPerSecond":50,"burst":100}});
        let identity = verifier(None, None).verify(&token(claims.clone())).unwrap();
        assert_eq!(identity.user_id.as_deref(), Some("alice"));
        assert_eq!(identity.organization_id.as_deref(), Some("acme"));
        assert_eq!(identity.rate_limit, Some(Rate { per_second: 50.0, burst: 100.0 }));
        assert_eq!(identity.metadata, Some(claims));
    }

    #[test]
    fn refuses_expired_early_forged_and_misaddressed_tokens() {
        let strict = verifier(Some("https://issuer"), Some("relay"));
        let good = json!({"sub":"a","exp":now() + 60,"iss":"https://issuer","aud":"relay"});
        assert!(strict.verify(&token(good.clone())).is_ok());
        let with = |field: &str, value: Value| {
            let mut claims = good.clone();
            claims[field] = value;
            token(claims)
        };
        assert_eq!(strict.verify(&with("exp", json!(now() - 120))), Err(AuthError::Expired));
        assert_eq!(strict.verify(&with("nbf", json!(now() + 120))), Err(AuthError::NotYetValid));
        assert_eq!(strict.verify(&with("iss", json!("https://elsewhere"))), Err(AuthError::WrongIssuer));
        assert_eq!(strict.verify(&with("aud", json!("another"))), Err(AuthError::WrongAudience));
        let forged = encode(&Header::default(), &good, &EncodingKey::from_secret(b"not the secret at all, no")).unwrap();
        assert_eq!(strict.verify(&forged), Err(AuthError::BadSignature));
        assert!(matches!(strict.verify("not.a.token"), Err(AuthError::Invalid(_))));
        assert!(matches!(strict.verify(&token(json!({"sub":"no expiry"}))), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn refuses_keys_that_do_not_fit_their_algorithms() {
        let config = JwtConfig { keys: Keys::Secret(SECRET.to_vec()), algorithms: vec![Algorithm::RS256], ..JwtConfig::default() };
        assert!(Verifier::new(config).is_err());
        let config = JwtConfig { keys: Keys::PublicKeyPem(b"not a key".to_vec()), ..JwtConfig::default() };
        assert!(Verifier::new(config).is_err());
    }

    #[test]
    fn finds_the_token_in_each_place() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(find_token("/s/1?a=b&token=t1", headers(&[])), Some(("t1", TokenSource::Query)));
        assert_eq!(find_token("/s/1", headers(&[("authorization", "Bearer t2")])), Some(("t2", TokenSource::Authorization)));
        assert_eq!(find_token("/s/1", headers(&[("authorization", "bearer  t3 ")])), Some(("t3", TokenSource::Authorization)));
        assert_eq!(find_token("/s/1", headers(&[("authorization", "Basic dTpw")])), None);
        assert_eq!(
            find_token("/s/1", headers(&[("sec-websocket-protocol", "switchyard.jwt, t3")])),
            Some(("t3", TokenSource::Subprotocol))
        );
        assert_eq!(find_token("/s/1", headers(&[("sec-websocket-protocol", "chat, t3")])), None, "without the marker, no token");
        assert_eq!(find_token("/s/1?token=", headers(&[("authorization", "Basic x")])), None);
    }
}
