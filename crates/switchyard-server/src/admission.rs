//! Admission: whether an upgrade may go ahead, and as whom. One path for the binary's
//! upgrades, the addon's native takeovers and its bridge upgrades: the address must be
//! within the relay's connection rate, the token valid when token auth is on, and the
//! upgrade URL says what the client resumes (`positions`, `since`, `previous`).

use std::net::IpAddr;

use switchyard_core::{ConnectionRefusal, Identity, Relay, Resume, TokenExpiry};

use crate::auth::{self, AuthError, TokenSource, Verifier};
use crate::now;

/// Token auth: the verifier, and whether a connection without a token is refused.
pub struct TokenAuth {
    /// Checks the token found in each upgrade request.
    pub verifier: Verifier,
    /// A connection without a token is refused (401); otherwise it comes in anonymous.
    pub required: bool,
    /// How a token's expiry ends its connection; `None`: checked at the upgrade only.
    pub expiry: Option<TokenExpiry>,
}

impl TokenAuth {
    /// The identity the request's token gives: `Ok(None)` for no token where none is
    /// required.
    pub fn identify<'a>(&self, url: &'a str, header: impl Fn(&str) -> Option<&'a str>) -> Result<Option<(Identity, TokenSource)>, AuthError> {
        auth::authenticate(&self.verifier, self.required, url, header)
    }
}

/// The identity a request's token gives (an empty one without auth, or without a token
/// where none is required); `None` when the request must be refused (401).
pub fn identity_of<'a>(auth: Option<&TokenAuth>, url: &'a str, header: impl Fn(&str) -> Option<&'a str>) -> Option<Identity> {
    match auth.map(|auth| auth.identify(url, header)) {
        None | Some(Ok(None)) => Some(Identity::default()),
        Some(Ok(Some((identity, _)))) => Some(identity),
        Some(Err(_)) => None,
    }
}

/// What the transport knows of an upgrade request; `None` fields where it has no request
/// (the addon's `handleUpgrade` called without one).
pub struct Upgrade<'a, H> {
    /// The request's path and query, where the token and what the client resumes are read.
    pub url: Option<&'a str>,
    /// The client's address, held to the relay's connection rate; `None` skips that check.
    pub address: Option<IpAddr>,
    /// Looks a header up by its lower-case name.
    pub header: H,
}

/// Why an upgrade was refused: answered 429 and 401 before the handshake where the
/// transport can, else closed with the refusal's code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The address is past the relay's connection rate (429).
    #[error("Too many connections from this address")]
    TooManyConnections,
    /// Token auth refused the request (401).
    #[error("{0}")]
    Unauthorized(AuthError),
}

impl Refused {
    /// The relay's refusal of the same name, for a transport that can only close the socket.
    pub fn refusal(&self) -> ConnectionRefusal {
        match self {
            Refused::TooManyConnections => ConnectionRefusal::TooManyConnections,
            Refused::Unauthorized(_) => ConnectionRefusal::Unauthorized,
        }
    }

    /// The whole HTTP answer of a transport that writes its own responses.
    pub fn http_answer(&self) -> Vec<u8> {
        match self {
            Refused::TooManyConnections => crate::handshake::http_error(429, "Too Many Requests", &self.to_string(), ""),
            Refused::Unauthorized(_) => crate::handshake::http_error(401, "Unauthorized", &self.to_string(), "WWW-Authenticate: Bearer\r\n"),
        }
    }
}

/// An upgrade let in.
pub struct Admitted {
    /// Who the connection is: the app's fields over the token's claims, and what it resumes.
    pub identity: Identity,
    /// The subprotocol the 101 answer must name: the token's, when it came as one.
    pub protocol: Option<&'static str>,
}

/// Lets an upgrade in or refuses it. `given` is what the app said of the connection: each
/// field it sets overrides the token's claim.
pub fn admit<'a>(relay: &Relay, auth: Option<&TokenAuth>, upgrade: Upgrade<'a, impl Fn(&str) -> Option<&'a str>>, given: Identity) -> Result<Admitted, Refused> {
    if let Some(address) = upgrade.address {
        if !relay.admit(address, now()) {
            return Err(Refused::TooManyConnections);
        }
    }
    let resume = upgrade.url.map_or_else(Resume::default, Resume::from_url);
    let given = Identity { resume, ..given };
    let Some(auth) = auth else { return Ok(Admitted { identity: given, protocol: None }) };
    let found = match upgrade.url {
        Some(url) => auth.identify(url, upgrade.header),
        None if auth.required => Err(AuthError::Missing),
        None => Ok(None),
    };
    match found.map_err(Refused::Unauthorized)? {
        Some((token, source)) => Ok(Admitted {
            identity: Identity {
                user_id: given.user_id.or(token.user_id),
                organization_id: given.organization_id.or(token.organization_id),
                client_id: given.client_id.or(token.client_id),
                metadata: given.metadata.or(token.metadata),
                rate_limit: given.rate_limit.or(token.rate_limit),
                resume: given.resume,
                expires_at: token.expires_at,
            },
            protocol: (source == TokenSource::Subprotocol).then_some(auth::TOKEN_SUBPROTOCOL),
        }),
        None => Ok(Admitted { identity: given, protocol: None }),
    }
}

/// What the app decided of an upgrade.
#[derive(Debug)]
pub enum Verdict {
    /// Let it in as this identity; each field it sets overrides the token's claim.
    Admit(Identity),
    /// Answer it with an HTTP error instead of the handshake.
    Refuse {
        /// The HTTP status code.
        status: u16,
        /// The reason phrase, also sent as the body.
        reason: &'static str,
    },
}

impl Verdict {
    /// The app gave no identity: the upgrade is refused 401.
    pub const UNAUTHORIZED: Self = Self::Refuse { status: 401, reason: "Unauthorized" };
    /// The app failed to decide, or could not be asked.
    pub const FAILED: Self = Self::Refuse { status: 500, reason: "Internal Server Error" };
}
