//! Who may scrape. By default anyone who reaches the port, over plain HTTP: the port is
//! meant to be one only scrapers reach. Where that cannot be arranged:
//!
//! - `metrics_tls`: the endpoint speaks TLS with the server's certificate (renewed by
//!   the same SIGHUP), offering HTTP/1.1 in ALPN; with `tls_client_ca`, a scraper must
//!   show a certificate the CA signed, as gRPC clients must.
//! - `metrics_auth`: a scrape must name a caller the server knows, by a token of the
//!   tokens file (`Authorization: Bearer TOKEN`, which Prometheus sends with
//!   `authorization: {credentials_file: ...}`), or, without a tokens file, by the
//!   certificate `tls_client_ca` verified. With an access control list, a line must
//!   grant that caller `read` on `metrics`. The request is checked each time, so a
//!   token revoked, or a grant taken away, by a SIGHUP refuses the next scrape, also
//!   on a connection kept open. (A certificate is checked at its handshake: a new
//!   `tls_client_ca` holds for connections made after it.)
//!
//! A refused scrape is answered 401 (no caller named: no token, an unknown one, or a
//! certificate without a usable common name) or 403 (a caller the list grants nothing
//! here), before the path is looked at, with a body that says what to do; its
//! connection is then closed (`http.rs`).

use std::sync::Arc;

use hyper::header::HeaderMap;
use hyper::StatusCode;

use crate::error::{Error, Result};
use crate::grpc::auth::{Access, Acl, Kind, Operation, Principal, Tokens};
use crate::grpc::connection::ServerTls;
use crate::server::ServeOptions;

/// The endpoint's TLS and its check of callers.
pub struct Guard {
    /// TLS for every connection (`metrics_tls`); None serves plain HTTP.
    pub tls: Option<ServerTls>,
    /// With `metrics_auth`: how a scrape names its caller, and what the list grants it.
    auth: Option<Callers>,
}

struct Callers {
    /// Scrapers send a token; None: the verified certificate names them.
    tokens: Option<Tokens>,
    acl: Option<Acl>,
}

/// A scrape refused: its status and a body that says why and what to do.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub why: String,
}

impl Guard {
    /// The guard `options` ask for; fails, saying what is missing, on settings it
    /// cannot honour (the one check of them: `strom serve` makes it before the data
    /// directory is touched).
    pub fn of(options: &ServeOptions) -> Result<Guard> {
        let tls = match (options.metrics_tls, &options.tls) {
            (false, _) => None,
            (true, Some(tls)) => Some(tls.clone()),
            (true, None) => {
                return Err(Error::InvalidArgument(
                    "metrics_tls needs tls_cert and tls_key: the metrics are served with the server's certificate".into(),
                ))
            }
        };
        let certificates = tls.as_ref().is_some_and(|tls| tls.clients_verified);
        let auth = match options.metrics_auth {
            false => None,
            true if options.tokens.is_none() && !certificates => {
                return Err(Error::InvalidArgument(
                    "metrics_auth needs auth_tokens (scrapers send a token), or tls_client_ca with metrics_tls (scrapers show a certificate)".into(),
                ))
            }
            true => Some(Callers {
                tokens: options.tokens.clone(),
                acl: options.acl.clone(),
            }),
        };
        Ok(Guard { tls, auth })
    }

    /// Whether a scrape with these headers, on a connection whose verified certificate
    /// has this common name, may be answered.
    pub fn check(
        &self,
        headers: &HeaderMap,
        certificate: Option<&Arc<str>>,
    ) -> Result<(), Refused> {
        let Some(callers) = &self.auth else {
            return Ok(());
        };
        let unauthorized = |why: String| Refused {
            status: StatusCode::UNAUTHORIZED,
            why,
        };
        let who = match &callers.tokens {
            Some(tokens) => match tokens.check_headers(headers) {
                Ok((principal, _)) => principal,
                Err(_) => {
                    let why = match headers.get_all(hyper::header::AUTHORIZATION).iter().count() {
                        0 => "the metrics need a token of the server's tokens file",
                        1 => "the Authorization header is not `Bearer TOKEN` with a token of the server's tokens file (a revoked one?)",
                        _ => "the request carries more than one Authorization header",
                    };
                    return Err(unauthorized(format!(
                        "{why}: send `Authorization: Bearer TOKEN` (Prometheus: `authorization: {{credentials_file: FILE}}`)"
                    )));
                }
            },
            None => match certificate {
                Some(name) => Principal(Arc::clone(name)),
                None => {
                    return Err(unauthorized(
                        "the client certificate has no single common name to name the scraper by; issue it one".into(),
                    ))
                }
            },
        };
        let access = Access::of_principal(callers.acl.as_ref(), Some(who.clone()));
        match access.check(Operation::Read, Kind::Metrics, "") {
            Ok(()) => Ok(()),
            Err(_) => Err(Refused {
                status: StatusCode::FORBIDDEN,
                why: format!(
                    "{} may not read the metrics: grant it with an acl line `{} read metrics`",
                    who.0, who.0
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::auth::file_line;

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(hyper::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    /// Settings a guard cannot honour are refused, saying what they need.
    #[test]
    fn a_guard_needs_what_it_uses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokens"), file_line("prom", "t").unwrap()).unwrap();
        let tokens = Tokens::load(&dir.path().join("tokens")).unwrap();
        let refused = |options: ServeOptions, says: &str| {
            let err = Guard::of(&options).err().expect("refused").to_string();
            assert!(err.contains(says), "{err}");
        };
        let tls_without_certificate = ServeOptions {
            metrics_tls: true,
            ..Default::default()
        };
        refused(tls_without_certificate, "metrics_tls needs tls_cert");
        let auth_without_callers = ServeOptions {
            metrics_auth: true,
            ..Default::default()
        };
        refused(auth_without_callers, "metrics_auth needs auth_tokens");
        let with_tokens = ServeOptions {
            metrics_auth: true,
            tokens: Some(tokens),
            ..Default::default()
        };
        assert!(Guard::of(&with_tokens).is_ok());
        assert!(Guard::of(&ServeOptions::default()).is_ok());
    }

    /// Who may scrape: anyone without `metrics_auth`; with it and tokens, a listed
    /// token (scheme in any case), and with an acl one granted `read metrics`; without
    /// tokens, the certificate's name.
    #[test]
    fn a_scrape_names_a_known_caller_with_a_grant() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            file_line("prom", "p").unwrap(),
            file_line("app", "a").unwrap(),
        ];
        std::fs::write(dir.path().join("tokens"), lines.join("\n")).unwrap();
        std::fs::write(
            dir.path().join("acl"),
            "prom read metrics\napp all topic:*\n",
        )
        .unwrap();
        let tokens = Tokens::load(&dir.path().join("tokens")).unwrap();
        let acl = Acl::load(&dir.path().join("acl")).unwrap();
        let open = Guard::of(&ServeOptions::default()).unwrap();
        assert_eq!(open.check(&HeaderMap::new(), None), Ok(()));
        let guard = |tokens: Option<Tokens>, acl: Option<Acl>| Guard {
            tls: None,
            auth: Some(Callers { tokens, acl }),
        };
        let status = |guard: &Guard, headers: &HeaderMap, name: Option<&str>| {
            let name = name.map(Arc::from);
            guard
                .check(headers, name.as_ref())
                .err()
                .map(|r| r.status.as_u16())
        };
        let listed = guard(Some(tokens.clone()), Some(acl.clone()));
        assert_eq!(status(&listed, &header("Bearer p"), None), None);
        assert_eq!(status(&listed, &header("bearer p"), None), None);
        assert_eq!(status(&listed, &header("Bearer a"), None), Some(403));
        assert_eq!(status(&listed, &header("Bearer x"), None), Some(401));
        assert_eq!(status(&listed, &header("Basic p"), None), Some(401));
        assert_eq!(status(&listed, &HeaderMap::new(), Some("prom")), Some(401));
        let any_token = guard(Some(tokens), None);
        assert_eq!(status(&any_token, &header("Bearer a"), None), None);
        let certificates = guard(None, Some(acl));
        assert_eq!(status(&certificates, &HeaderMap::new(), Some("prom")), None);
        assert_eq!(
            status(&certificates, &HeaderMap::new(), Some("app")),
            Some(403)
        );
        assert_eq!(status(&certificates, &header("Bearer p"), None), Some(401));
    }
}
