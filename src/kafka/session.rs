//! Who is on a Kafka connection, and what they may do: the Kafka listener's side of
//! the server's security settings, the same ones gRPC calls meet.
//!
//! - `tls_cert` (and `tls_client_ca`): the connection is TLS, as Kafka's `SSL` and
//!   `SASL_SSL` listeners are (the handshake is made in `listener.rs`).
//! - `auth_tokens`: the client authenticates with SASL before anything but
//!   ApiVersions is answered: the user name is the token's name in the tokens file,
//!   the password the token. Kafka clients send it as they would to any Kafka broker:
//!   `sasl.mechanism=PLAIN`, or `SCRAM-SHA-256` / `SCRAM-SHA-512` for tokens whose
//!   line has SCRAM keys (`scram.rs`; `strom token new` writes them), which never
//!   sends the token itself. Before that, frames are kept small (no request of a
//!   stranger is charged to the produce budget) and the connection must authenticate
//!   within `silent_client_timeout` of being accepted; at most `max_strangers` such
//!   connections are open at once (`listener.rs`). After a reload of the tokens file
//!   (SIGHUP), the connection's token is checked again at once, before its next
//!   request, and before the answer to a request that waited; a revoked one closes the
//!   connection (the client reconnects and fails).
//! - Without tokens, a client certificate the server verified names the caller (its
//!   common name), as over gRPC.
//! - `acl`: every request is checked against the list for the caller, by
//!   `authorize.rs`.
//!
//! The session is a state machine without I/O: `connection.rs` feeds it the requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use kafka_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;
use kafka_protocol::protocol::StrBytes;

use super::errors::code::{
    ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM,
};
use super::requests::key;
use super::scram::{Exchange, Step};
use super::wire::{Decoded, Malformed};
use crate::grpc::auth::scram::Mechanism;
use crate::grpc::auth::{Access, Acl, Digest, Principal, Tokens};
use crate::grpc::connection::ServerTls;

/// SASL/PLAIN: the token itself, which only TLS keeps from the network.
pub const PLAIN: &str = "PLAIN";

/// Before authentication, frames are at most this: ApiVersions and the SASL requests
/// are far smaller, and a larger frame would be charged to the produce budget.
pub const UNAUTHENTICATED_MAX_FRAME: usize = 16 << 10;

/// The server's security settings, as the Kafka listener applies them.
#[derive(Clone, Default)]
pub struct Security {
    pub tls: Option<ServerTls>,
    pub tokens: Option<Tokens>,
    pub acl: Option<Acl>,
    /// From the accept to the end of authentication (TLS handshake included).
    pub handshake_timeout: Duration,
}

/// Where a connection is in authenticating.
#[derive(Debug)]
enum Stage {
    /// No tokens are asked for: every request is answered.
    Open,
    /// Tokens are asked for: only ApiVersions and SaslHandshake are answered.
    Unauthenticated,
    /// A mechanism was picked: SaslAuthenticate is next.
    Handshaken(Pending),
    Authenticated,
}

/// The mechanism picked, and where its exchange is.
#[derive(Debug)]
enum Pending {
    Plain,
    Scram(Exchange),
}

/// One connection's caller.
pub struct Session {
    stage: Stage,
    who: Option<Principal>,
    /// The token's digest, and the tokens file's generation it was last checked at.
    token: Option<(Digest, u64)>,
}

impl Session {
    /// A connection's session, with the common name of its verified client
    /// certificate, if it showed one.
    pub fn new(security: &Security, certificate_name: Option<Arc<str>>) -> Session {
        let tokens = security.tokens.is_some();
        Session {
            stage: match tokens {
                true => Stage::Unauthenticated,
                false => Stage::Open,
            },
            // With tokens, the token names the caller, as over gRPC.
            who: certificate_name.filter(|_| !tokens).map(Principal),
            token: None,
        }
    }

    /// Who the client is, once it said (or its certificate did).
    pub fn who(&self) -> Option<&Principal> {
        self.who.as_ref()
    }

    /// Whether the caller is past authentication (or none is asked for).
    pub fn authenticated(&self) -> bool {
        matches!(self.stage, Stage::Open | Stage::Authenticated)
    }

    /// The largest frame the connection may send now.
    pub fn max_frame(&self, max_request_bytes: usize) -> usize {
        match self.authenticated() {
            true => max_request_bytes,
            false => max_request_bytes.min(UNAUTHENTICATED_MAX_FRAME),
        }
    }

    /// Whether a request of `api_key` may be answered now. An error closes the
    /// connection: a request before authentication, a SASL request out of turn (as
    /// Kafka does), or a token revoked since the last request.
    pub fn admit(&mut self, security: &Security, api_key: i16) -> Decoded<()> {
        match (&self.stage, api_key) {
            (_, key::API_VERSIONS) => Ok(()),
            (Stage::Open | Stage::Unauthenticated, key::SASL_HANDSHAKE) => Ok(()),
            (Stage::Handshaken(_), key::SASL_AUTHENTICATE) => Ok(()),
            (Stage::Unauthenticated | Stage::Handshaken(_), _) => Err(Malformed(format!(
                "API key {api_key} before SASL authentication: this server requires SASL with a token (sasl.mechanism=PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, the token's name as the user name, the token as the password)"
            ))),
            (Stage::Open, key::SASL_AUTHENTICATE) => Err(Malformed(
                "SaslAuthenticate on a server that asks for no authentication".into(),
            )),
            (_, key::SASL_HANDSHAKE | key::SASL_AUTHENTICATE) => Err(Malformed(format!(
                "API key {api_key} out of turn: the connection has authenticated already"
            ))),
            (Stage::Open, _) => Ok(()),
            (Stage::Authenticated, _) => self.recheck(security),
        }
    }

    /// After a reload of the tokens file, the token must still be listed, for the same
    /// name: checked before each request, and again before the answer to one that
    /// waited (a long poll, a join), which must not deliver what a revoked token asked.
    pub fn recheck(&mut self, security: &Security) -> Decoded<()> {
        let (Some(tokens), Some((digest, checked_at))) = (&security.tokens, &mut self.token) else {
            return Ok(());
        };
        let generation = tokens.generation();
        if generation == *checked_at {
            return Ok(());
        }
        match tokens.known(digest) {
            Some(principal) if Some(&principal) == self.who.as_ref() => {
                *checked_at = generation;
                Ok(())
            }
            _ => Err(Malformed(
                "the connection's token was revoked (the tokens file no longer lists it)".into(),
            )),
        }
    }

    /// What the caller may do, by the access control list as it is now.
    pub fn access(&self, security: &Security) -> Access {
        Access::of_principal(security.acl.as_ref(), self.who.clone())
    }

    /// Answers SaslHandshake: PLAIN and SCRAM are taken when tokens are asked for.
    pub fn handshake(&mut self, security: &Security, mechanism: &str) -> SaslHandshakeResponse {
        let mut response = SaslHandshakeResponse::default();
        if security.tokens.is_none() {
            tracing::debug!("kafka SaslHandshake on a server that asks for no tokens");
            response.error_code = ILLEGAL_SASL_STATE;
            return response;
        }
        response.mechanisms = std::iter::once(PLAIN)
            .chain(Mechanism::ALL.map(Mechanism::name))
            .map(StrBytes::from_static_str)
            .collect();
        let pending = match Mechanism::named(mechanism) {
            _ if mechanism == PLAIN => Some(Pending::Plain),
            Some(scram) => Some(Pending::Scram(Exchange::new(scram))),
            None => None,
        };
        match pending {
            Some(pending) => self.stage = Stage::Handshaken(pending),
            None => {
                tracing::debug!(
                    mechanism,
                    "kafka SaslHandshake for a mechanism strom does not take"
                );
                response.error_code = UNSUPPORTED_SASL_MECHANISM;
            }
        }
        response
    }

    /// Answers SaslAuthenticate; true: close the connection once the answer is
    /// written (a failed authentication, as Kafka does).
    pub fn authenticate(
        &mut self,
        security: &Security,
        bytes: &Bytes,
    ) -> (SaslAuthenticateResponse, bool) {
        let mut response = SaslAuthenticateResponse::default();
        // Read before the check: a reload after it is seen at the next request.
        let generation = security.tokens.as_ref().map_or(0, Tokens::generation);
        let pending = match std::mem::replace(&mut self.stage, Stage::Unauthenticated) {
            Stage::Handshaken(pending) => Some(pending),
            _ => None, // `admit` lets SaslAuthenticate through only after a handshake
        };
        let checked = match (security.tokens.as_ref(), pending) {
            (None, _) | (_, None) => Err("no SASL handshake made".to_string()),
            (Some(tokens), Some(Pending::Plain)) => plain(tokens, bytes).map_err(str::to_string),
            (Some(tokens), Some(Pending::Scram(mut exchange))) => match server_nonce() {
                None => Err("the system's random source failed".to_string()),
                Some(nonce) => match exchange.step(tokens, bytes, &nonce) {
                    Step::Continue(first) => {
                        response.auth_bytes = first.into();
                        self.stage = Stage::Handshaken(Pending::Scram(exchange));
                        return (response, false);
                    }
                    Step::Done {
                        principal,
                        digest,
                        server_final,
                    } => {
                        response.auth_bytes = server_final.into();
                        Ok((principal, digest))
                    }
                    Step::Failed(why) => Err(why),
                },
            },
        };
        match checked {
            // Session lifetime 0 (the default): no re-authentication asked for.
            Ok((principal, digest)) => {
                tracing::debug!(who = &*principal.0, "kafka connection authenticated");
                self.who = Some(principal);
                self.token = Some((digest, generation));
                self.stage = Stage::Authenticated;
                (response, false)
            }
            Err(why) => {
                tracing::debug!("kafka SASL authentication failed: {why}");
                response.error_code = SASL_AUTHENTICATION_FAILED;
                response.error_message = Some(StrBytes::from_string(format!(
                    "authentication failed: {why}"
                )));
                self.stage = Stage::Unauthenticated;
                (response, true)
            }
        }
    }
}

/// The server's part of a SCRAM nonce: 18 random bytes in base64 (no commas). None
/// if the system's random source fails: a nonce the server would send again would let
/// a recorded exchange be replayed.
fn server_nonce() -> Option<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 18];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Checks SASL/PLAIN's message (RFC 4616): `[authzid] NUL authcid NUL passwd`. The
/// user name (authcid) must be the token's name; an authorization id, if given, the
/// same name (strom has no acting for another).
fn plain(tokens: &Tokens, bytes: &[u8]) -> Result<(Principal, Digest), &'static str> {
    let mut fields = bytes.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("not a SASL/PLAIN message (authzid NUL user NUL password)");
    };
    let (Ok(authzid), Ok(user), Ok(password)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(user),
        std::str::from_utf8(password),
    ) else {
        return Err("a SASL/PLAIN field is not UTF-8");
    };
    // Trimmed, as a gRPC call's bearer token is: a token pasted with its newline works
    // the same on both.
    let password = password.trim();
    if !authzid.is_empty() && authzid != user {
        return Err("an authorization id other than the user name");
    }
    // One answer for an unknown token and a token of another name: the answer tells a
    // guesser nothing about which part was wrong.
    match tokens.principal_of(password) {
        Some((principal, digest)) if &*principal.0 == user => Ok((principal, digest)),
        _ => Err("the user name and token are not a pair the tokens file lists (the user name is the token's name; the token may have been revoked)"),
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
