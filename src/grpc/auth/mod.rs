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
pub mod scram;
mod tokens;

pub use access::{Access, Grant};
pub use acl::{Acl, Kind, Operation};
use tokens::revoked;
pub use tokens::{file_line, file_line_with_scram, new_token, ScramKeys, Tokens};

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;

use super::connection::ConnectionInfo;
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
                match tokens.check_headers(request.headers()) {
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
