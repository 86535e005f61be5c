//! The tokens file (`auth_tokens`): who each token belongs to, by the token's SHA-256,
//! and the SCRAM keys of the tokens that have them (`scram.rs`), for Kafka clients.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::reloadable::Reloadable;
use super::scram::{self, Credential, Mechanism};
use super::{Digest, Principal};
use crate::error::{Error, IoContext, Result};

/// What the tokens file says.
#[derive(Debug, Default, PartialEq)]
struct TokenFile {
    principals: HashMap<Digest, Principal>,
    /// Each name's SCRAM keys, by mechanism: those made as its last line's were
    /// (chosen once, at the read).
    scram: HashMap<(Arc<str>, Mechanism), ScramKeys>,
}

/// SCRAM keys, and the digest of the token they were made from.
type Keyed = (Credential, Digest);

/// The SCRAM keys of one name for one mechanism: the salt and iteration count the
/// server tells the client, and each of the name's tokens' keys made with them.
#[derive(Debug, Clone, PartialEq)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub keys: Vec<Keyed>,
}

/// The tokens file, read and checked; `reload` reads it again.
#[derive(Clone)]
pub struct Tokens(Arc<Reloadable<TokenFile>>);

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

    /// Whose token the `authorization` header of `headers` carries (and its digest), or
    /// why the call is refused: also with two such headers, which name no one caller (a
    /// proxy's added beside a client's own, say), where the first used to count.
    pub fn check_headers(
        &self,
        headers: &http::HeaderMap,
    ) -> std::result::Result<(Principal, Digest), tonic::Status> {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(tonic::Status::unauthenticated(
                "the call carries more than one `authorization` header: send one, `Bearer TOKEN`",
            ));
        }
        self.check(first)
    }

    /// Whose token `authorization` carries (and its digest), or why the call is refused.
    pub fn check(
        &self,
        authorization: Option<&http::HeaderValue>,
    ) -> std::result::Result<(Principal, Digest), tonic::Status> {
        let Some(value) = authorization else {
            return Err(tonic::Status::unauthenticated(
                "this server requires a token: send the metadata `authorization: Bearer TOKEN` (the strom CLI: STROM_TOKEN or --token-file)",
            ));
        };
        // The scheme's name is case-insensitive (RFC 9110, 11.1).
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.get(..7)
                    .filter(|s| s.eq_ignore_ascii_case("bearer "))
                    .map(|_| &v[7..])
            })
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
        self.0.current().principals.get(digest).cloned()
    }

    /// `name`'s SCRAM keys for `mechanism`: those made with the salt and iteration
    /// count of the last listed (a name's tokens share them when `strom token` made
    /// them; one made otherwise is taken only if it is the last). None: the name has
    /// none, or is not listed.
    pub fn scram_keys(&self, name: &str, mechanism: Mechanism) -> Option<ScramKeys> {
        let file = self.0.current();
        file.scram.get(&(Arc::from(name), mechanism)).cloned()
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

pub(super) fn revoked() -> tonic::Status {
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

/// As `file_line`, with the token's SCRAM keys for Kafka clients (`scram.rs`):
/// `NAME SHA256 SCRAM-SHA-256=... SCRAM-SHA-512=...`.
pub fn file_line_with_scram(name: &str, token: &str) -> Result<String> {
    Ok(format!(
        "{} {}",
        file_line(name, token)?,
        scram::fields(name, token)
    ))
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

/// `NAME DIGEST [SCRAM...]` lines (DIGEST: 64 hex digits, SHA-256 of the token; then
/// SCRAM keys, `scram.rs`), blank lines and `#` comments aside.
fn read(file: &Path) -> Result<TokenFile> {
    let text = std::fs::read_to_string(file).at(file)?;
    let bad = |line: usize, what: &str| {
        Error::InvalidArgument(format!(
            "auth_tokens {} line {line}: {what}; each line is `NAME SHA256`, the hex SHA-256 of a token (printf %s \"$TOKEN\" | sha256sum), then SCRAM keys if any (strom token new writes them)",
            file.display()
        ))
    };
    let mut tokens = HashMap::new();
    let mut scram: HashMap<_, Vec<_>> = HashMap::new();
    for (at, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, hex, ref keys @ ..] = fields[..] else {
            return Err(bad(at + 1, "fewer than two fields"));
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
        let mut mechanisms = Vec::new();
        for field in keys {
            let (mechanism, credential) =
                Credential::parse(field).map_err(|why| bad(at + 1, &why))?;
            if mechanisms.contains(&mechanism) {
                return Err(bad(at + 1, &format!("{} twice", mechanism.name())));
            }
            mechanisms.push(mechanism);
            scram
                .entry((Arc::from(name), mechanism))
                .or_default()
                .push((credential, digest));
        }
    }
    if tokens.is_empty() {
        return Err(bad(0, "no token in the file, so no call could be served"));
    }
    let scram = scram
        .into_iter()
        .map(|((name, mechanism), listed): ((Arc<str>, Mechanism), Vec<Keyed>)| {
            let last = &listed[listed.len() - 1].0;
            let (salt, iterations) = (last.salt.clone(), last.iterations);
            let count = listed.len();
            let keys: Vec<Keyed> = listed
                .into_iter()
                .filter(|(c, _)| c.salt == salt && c.iterations == iterations)
                .collect();
            if keys.len() < count {
                tracing::warn!(
                    file = %file.display(),
                    "the tokens of {name} have {} keys made with different salts or iteration counts: only those made as its last line's work under SCRAM (strom token new makes a name's keys alike)",
                    mechanism.name()
                );
            }
            let keys = ScramKeys {
                salt,
                iterations,
                keys,
            };
            ((name, mechanism), keys)
        })
        .collect();
    Ok(TokenFile {
        principals: tokens,
        scram,
    })
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

    #[test]
    fn scram_keys_are_read_with_their_line_and_a_name_shares_one_salt() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        let other_salt = Credential::of(Mechanism::Sha256, "t3", b"another salt", 4096);
        let lines = [
            file_line_with_scram("orders", "t1").unwrap(),
            file_line("orders", "t2").unwrap(),
            file_line_with_scram("orders", "t3").unwrap(),
            format!(
                "{} {}",
                file_line("ops", "t4").unwrap(),
                other_salt.field(Mechanism::Sha256)
            ),
            file_line_with_scram("ops", "t5").unwrap(),
        ];
        std::fs::write(&file, lines.join("\n")).unwrap();
        let tokens = Tokens::load(&file).unwrap();
        for mechanism in Mechanism::ALL {
            let orders = tokens.scram_keys("orders", mechanism).unwrap();
            assert_eq!(orders.salt, scram::salt_of("orders"));
            let digests: Vec<Digest> = orders.keys.iter().map(|(_, d)| *d).collect();
            assert_eq!(digests, [digest(b"t1"), digest(b"t3")]);
            // The last line's salt: the keys made with another are left out.
            let ops = tokens.scram_keys("ops", mechanism).unwrap();
            assert_eq!(ops.keys.len(), 1);
            assert_eq!(ops.keys[0].1, digest(b"t5"));
            assert!(tokens.scram_keys("nobody", mechanism).is_none());
        }
        let field = scram::fields("x", "t")
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        for (bad, said) in [
            (
                format!("x {} SCRAM-SHA-1=1:a:b:c", hex(&digest(b"t"))),
                "not a mechanism",
            ),
            (format!("x {} {field} {field}", hex(&digest(b"t"))), "twice"),
        ] {
            std::fs::write(&file, &bad).unwrap();
            let err = tokens.reload().unwrap_err().to_string();
            assert!(
                err.contains("auth_tokens") && err.contains(said),
                "{bad}: {err}"
            );
        }
    }
}
