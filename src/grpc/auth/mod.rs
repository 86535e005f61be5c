//! Authentication by token (`auth_tokens`): with a tokens file, every call must carry
//! `authorization: Bearer TOKEN` with a token the file lists, or it is answered
//! UNAUTHENTICATED before it is read. Only a health check (`Health/Check`: load
//! balancers and orchestrators probe without credentials, and it is not counted in
//! `max_calls`) needs none; a health Watch or reflection stream would hold a call's
//! place, so they need a token too.
//!
//! A call's token is checked again whenever the file has been read again since the
//! last check (`revocable.rs`): a revoked token ends the streams it opened, not only
//! the calls made after the revocation.
//!
//! The file holds SHA-256 digests of the tokens, not the tokens, one `NAME DIGEST` a
//! line, so that reading it does not give anyone access. NAME is who the token belongs
//! to: the call carries it on (`Principal`, in its extensions), and a name may have
//! several tokens (a new one and the one it replaces). A token is looked up by its
//! digest; comparing digests leaks nothing useful about the token through timing.
//! SIGHUP to `strom serve` reads the file again, so a token is revoked without a restart.
//!
//! Every call, with tokens or without, gets its `Access` in its extensions: what the
//! access control list (`acl.rs`) lets its principal do, or everything when there is no
//! list. Without tokens, a client certificate the server verified names the principal
//! (its common name). The handlers check it (`access.rs`).

pub mod access;
pub mod acl;
pub(crate) mod reloadable;
mod revocable;

pub use access::{Access, Grant};
pub use acl::{Acl, Kind, Operation};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;

use super::connection::ConnectionInfo;
use crate::error::{Error, IoContext, Result};
use reloadable::Reloadable;
use revocable::{GrantWatch, Revocable, TokenWatch, Watch};

/// The one call that needs no token.
const OPEN_PATH: &str = "/grpc.health.v1.Health/Check";

/// Streams whose responses deliver records: a revoked token also ends them before
/// their next message, not only at the client's next request message.
const READ_STREAMS: [&str; 2] = ["/strom.v1.Log/Subscribe", "/strom.v1.Queues/ShareStream"];

/// Who a call's token belongs to, in its request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub Arc<str>);

/// A token's SHA-256: what the tokens file lists, and what a connection keeps to check
/// its token again after a reload.
pub type Digest = [u8; 32];

type BoxFuture<T, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<T, E>> + Send>>;

/// The tokens file, read and checked; `reload` reads it again.
#[derive(Clone)]
pub struct Tokens(Arc<Reloadable<HashMap<Digest, Principal>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("file", &self.0.file())
            .finish()
    }
}

impl Tokens {
    pub fn load(file: &Path) -> Result<Tokens> {
        Ok(Tokens(Arc::new(Reloadable::load(file, read)?)))
    }

    /// Reads the file again: calls from now on are checked against it. On any error
    /// the tokens in use stay, all of them.
    pub fn reload(&self) -> Result<()> {
        self.0.reload()
    }

    /// Whose token `authorization` carries (and its digest), or why the call is refused.
    fn check(
        &self,
        authorization: Option<&http::HeaderValue>,
    ) -> std::result::Result<(Principal, Digest), tonic::Status> {
        let Some(value) = authorization else {
            return Err(tonic::Status::unauthenticated(
                "this server requires a token: send the metadata `authorization: Bearer TOKEN` (the strom CLI: STROM_TOKEN or --token-file)",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                tonic::Status::unauthenticated("the authorization metadata is not `Bearer TOKEN`")
            })?;
        let digest = digest(token.as_bytes());
        match self.known(&digest) {
            Some(principal) => Ok((principal, digest)),
            None => Err(revoked()),
        }
    }

    /// Whose `token` it is, and its digest; None for a token the file does not list.
    /// For protocols that carry the token in their own framing (Kafka's SASL/PLAIN).
    pub fn principal_of(&self, token: &str) -> Option<(Principal, Digest)> {
        let digest = digest(token.as_bytes());
        self.known(&digest).map(|principal| (principal, digest))
    }

    /// Who the token of this digest belongs to, if the file still lists it.
    pub fn known(&self, digest: &Digest) -> Option<Principal> {
        self.0.current().get(digest).cloned()
    }

    /// How many times the tokens changed: calls open since an earlier reading check
    /// their token again.
    pub fn generation(&self) -> u64 {
        self.0.generation()
    }

    /// A receiver told at each change, to wake streams that have nothing to send.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<()> {
        self.0.changes()
    }
}

fn revoked() -> tonic::Status {
    tonic::Status::unauthenticated("the token is not one this server accepts (unknown, or revoked)")
}

/// A new token: 32 bytes from the system's secure random source, as 64 hex digits.
pub fn new_token() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::InvalidArgument("the system's random source failed".into()))?;
    Ok(hex(&bytes))
}

/// The tokens file's line for `token`, belonging to `name`: `NAME SHA256`.
pub fn file_line(name: &str, token: &str) -> Result<String> {
    if !usable_name(name) {
        return Err(Error::InvalidArgument(format!(
            "{name:?} cannot name a token: use letters, digits and punctuation, no spaces or *, not starting with #"
        )));
    }
    Ok(format!("{name} {}", hex(&digest(token.as_bytes()))))
}

/// Whether `name` can name a token: a `*` would read as a wildcard on an acl line.
fn usable_name(name: &str) -> bool {
    !(name.is_empty()
        || name.starts_with('#')
        || name.contains('*')
        || name.chars().any(char::is_whitespace))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(bytes: &[u8]) -> Digest {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// `NAME DIGEST` lines (DIGEST: 64 hex digits, SHA-256 of the token), blank lines and
/// `#` comments aside.
fn read(file: &Path) -> Result<HashMap<Digest, Principal>> {
    let text = std::fs::read_to_string(file).at(file)?;
    let bad = |line: usize, what: &str| {
        Error::InvalidArgument(format!(
            "auth_tokens {} line {line}: {what}; each line is `NAME SHA256`, the hex SHA-256 of a token (printf %s \"$TOKEN\" | sha256sum)",
            file.display()
        ))
    };
    let mut tokens = HashMap::new();
    for (at, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, hex] = fields[..] else {
            return Err(bad(at + 1, "not two fields"));
        };
        if !usable_name(name) {
            return Err(bad(
                at + 1,
                "a NAME with * (an acl would read it as anyone)",
            ));
        }
        let digest =
            parse_hex(hex).ok_or_else(|| bad(at + 1, "the digest is not 64 hex digits"))?;
        if tokens.insert(digest, Principal(name.into())).is_some() {
            return Err(bad(at + 1, "a digest listed twice"));
        }
    }
    if tokens.is_empty() {
        return Err(bad(0, "no token in the file, so no call could be served"));
    }
    Ok(tokens)
}

fn parse_hex(hex: &str) -> Option<Digest> {
    // Hex digits only: `from_str_radix` would also take a sign.
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(digest)
}

/// Refuses calls without a known token, when there is a tokens file, and gives every
/// call its `Access` (what the access control list lets its principal do).
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Option<Tokens>,
    acl: Option<Acl>,
}

impl AuthLayer {
    pub fn new(tokens: Option<Tokens>, acl: Option<Acl>) -> AuthLayer {
        AuthLayer { tokens, acl }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: self.tokens.clone(),
            acl: self.acl.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Tokens>,
    acl: Option<Acl>,
}

impl<S> Auth<S> {
    /// The access of a call made by `who`.
    fn access(&self, who: Option<Principal>) -> Access {
        Access::of_principal(self.acl.as_ref(), who)
    }
}

impl<S> tower_service::Service<http::Request<Body>> for Auth<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        std::future::Ready<std::result::Result<http::Response<Body>, S::Error>>,
        futures_util::future::Either<S::Future, BoxFuture<http::Response<Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        use futures_util::future::Either;
        if request.uri().path() == OPEN_PATH {
            return Either::Right(Either::Left(self.inner.call(request)));
        }
        // Read before the checks: a reload after them is seen by the bodies.
        let acl_generation = self.acl.as_ref().map(Acl::generation);
        let (who, token) = match &self.tokens {
            Some(tokens) => {
                let generation = tokens.generation();
                match tokens.check(request.headers().get(http::header::AUTHORIZATION)) {
                    Ok((principal, digest)) => (
                        Some(principal.clone()),
                        Some(TokenWatch {
                            tokens: tokens.clone(),
                            digest,
                            principal,
                            generation,
                        }),
                    ),
                    Err(refused) => {
                        return Either::Left(std::future::ready(Ok(refused.into_http())))
                    }
                }
            }
            // Without tokens, a verified client certificate names the caller.
            None => (
                request
                    .extensions()
                    .get::<ConnectionInfo>()
                    .and_then(ConnectionInfo::certificate_name)
                    .map(Principal),
                None,
            ),
        };
        let access = self.access(who.clone());
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(access);
        if let Some(who) = who {
            parts.extensions.insert(who);
        }
        let body = match &token {
            Some(token) => Revocable::request(body, Watch::from(token.clone())),
            None => body,
        };
        // Streams that deliver records also stop delivering them (see `revocable.rs`).
        let watched = token.is_some() || self.acl.is_some();
        let delivers = watched && READ_STREAMS.contains(&parts.uri.path());
        let response = self.inner.call(http::Request::from_parts(parts, body));
        if !delivers {
            return Either::Right(Either::Left(response));
        }
        let acl = self.acl.clone();
        Either::Right(Either::Right(Box::pin(async move {
            let response = response.await?;
            let grant = acl.zip(acl_generation).map(|(acl, generation)| GrantWatch {
                acl,
                grant: response.extensions().get::<Grant>().cloned(),
                generation,
            });
            let watch = Watch { token, grant };
            Ok(response.map(|body| Revocable::response(body, watch)))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_read_strictly_and_tokens_are_checked_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        let hex = |token: &str| hex(&digest(token.as_bytes()));
        std::fs::write(
            &file,
            format!("# ops\norders {}\n\norders {}\n", hex("t1"), hex("t2")),
        )
        .unwrap();
        let tokens = Tokens::load(&file).unwrap();
        let header = |v: &str| http::HeaderValue::from_str(v).unwrap();
        assert_eq!(
            tokens.check(Some(&header("Bearer t1"))).unwrap().0,
            Principal("orders".into())
        );
        assert_eq!(
            tokens.check(Some(&header("Bearer t2"))).unwrap().0,
            Principal("orders".into())
        );
        for refused in ["Bearer t3", "t1", "Bearer ", "Basic t1"] {
            assert_eq!(
                tokens.check(Some(&header(refused))).unwrap_err().code(),
                tonic::Code::Unauthenticated,
                "{refused}"
            );
        }
        assert!(tokens.check(None).is_err());
        // A revoked token goes at the reload; a bad file changes nothing.
        std::fs::write(&file, format!("orders {}\n", hex("t2"))).unwrap();
        tokens.reload().unwrap();
        assert!(tokens.check(Some(&header("Bearer t1"))).is_err());
        let signed = format!("orders +{}\n", &hex("t")[1..]);
        for bad in [
            &format!("a*b {}\n", hex("t")),
            "orders\n",
            "orders abc\n",
            "a b c\n",
            "",
            "# none\n",
            &signed,
        ] {
            std::fs::write(&file, bad).unwrap();
            let err = tokens.reload().unwrap_err().to_string();
            assert!(err.contains("auth_tokens"), "{bad:?}: {err}");
        }
        std::fs::write(&file, format!("a {0}\nb {0}\n", hex("t"))).unwrap();
        assert!(tokens.reload().unwrap_err().to_string().contains("twice"));
        assert!(tokens.check(Some(&header("Bearer t2"))).is_ok());
    }
}
