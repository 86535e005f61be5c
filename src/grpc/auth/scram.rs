//! SCRAM credentials (RFC 5802, RFC 7677) of the tokens file's tokens, for Kafka
//! clients that authenticate with `sasl.mechanism=SCRAM-SHA-256` or `SCRAM-SHA-512`
//! (`kafka/scram.rs` runs the exchange). A SCRAM server cannot check a proof against
//! the SHA-256 of a token: it needs keys made from the token with a salt. A line of
//! the tokens file may carry them after the digest, one field a mechanism:
//!
//! ```text
//! NAME SHA256 SCRAM-SHA-256=4096:SALT:STOREDKEY:SERVERKEY SCRAM-SHA-512=4096:SALT:STOREDKEY:SERVERKEY
//! ```
//!
//! (iterations, then base64). `strom token new` writes both. A name's salt is made from
//! the name, so that every token of a name has the same one: the server says the salt
//! before the client proves which token it holds, and a name may hold several tokens
//! at once (a new one and the one it replaces). Tokens that `strom token` makes are 32
//! random bytes, which no salt or iteration count needs to protect.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;

/// PBKDF2 iterations of the keys `strom token` makes: the least RFC 7677 asks for, and
/// Kafka's default.
pub const ITERATIONS: u32 = 4096;

/// A SCRAM mechanism strom takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// Its SASL name, as clients give it and the tokens file's field starts.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn named(name: &str) -> Option<Mechanism> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac_of(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), message)
            .as_ref()
            .to_vec()
    }
}

/// One token's keys for one mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub iterations: u32,
    pub salt: Vec<u8>,
    /// H(ClientKey): checks a client's proof.
    pub stored_key: Vec<u8>,
    /// Signs the server's final message, which proves the server knew the keys.
    pub server_key: Vec<u8>,
}

impl Credential {
    /// The keys of `token` with `salt`.
    pub fn of(mechanism: Mechanism, token: &str, salt: &[u8], iterations: u32) -> Credential {
        let mut salted = vec![0u8; mechanism.digest().output_len()];
        let rounds = NonZeroU32::new(iterations.max(1)).expect("at least 1");
        pbkdf2::derive(
            mechanism.pbkdf2(),
            rounds,
            salt,
            token.as_bytes(),
            &mut salted,
        );
        let client_key = mechanism.hmac_of(&salted, b"Client Key");
        Credential {
            iterations,
            salt: salt.to_vec(),
            stored_key: digest::digest(mechanism.digest(), &client_key)
                .as_ref()
                .to_vec(),
            server_key: mechanism.hmac_of(&salted, b"Server Key"),
        }
    }

    /// Keys no proof matches, for a name without any: checking against them takes as
    /// long as against a name's.
    pub fn none(mechanism: Mechanism) -> Credential {
        let len = mechanism.digest().output_len();
        Credential {
            iterations: ITERATIONS,
            salt: Vec::new(),
            stored_key: vec![0; len],
            server_key: vec![0; len],
        }
    }

    /// Whether `proof` proves the token for `auth_message`: ClientKey is the proof
    /// XOR HMAC(StoredKey, AuthMessage), and H(ClientKey) must be StoredKey. Compared
    /// in constant time.
    pub fn proves(&self, mechanism: Mechanism, auth_message: &[u8], proof: &[u8]) -> bool {
        let signature = mechanism.hmac_of(&self.stored_key, auth_message);
        if proof.len() != signature.len() {
            return false;
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored = digest::digest(mechanism.digest(), &client_key);
        bool::from(stored.as_ref().ct_eq(&self.stored_key))
    }

    /// The server's signature of `auth_message`, for its final message.
    pub fn server_signature(&self, mechanism: Mechanism, auth_message: &[u8]) -> Vec<u8> {
        mechanism.hmac_of(&self.server_key, auth_message)
    }

    /// The tokens file's field: `MECHANISM=ITERATIONS:SALT:STOREDKEY:SERVERKEY`.
    pub fn field(&self, mechanism: Mechanism) -> String {
        format!(
            "{}={}:{}:{}:{}",
            mechanism.name(),
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(&self.stored_key),
            BASE64.encode(&self.server_key)
        )
    }

    /// Reads a tokens file's field, or says what is wrong with it.
    pub fn parse(field: &str) -> Result<(Mechanism, Credential), String> {
        let (name, value) = field.split_once('=').ok_or_else(|| {
            format!("{field:?} is not MECHANISM=ITERATIONS:SALT:STOREDKEY:SERVERKEY")
        })?;
        let mechanism = Mechanism::named(name).ok_or_else(|| {
            format!("{name:?} is not a mechanism strom takes (SCRAM-SHA-256, SCRAM-SHA-512)")
        })?;
        let parts: Vec<&str> = value.split(':').collect();
        let [iterations, salt, stored, server] = parts[..] else {
            return Err(format!("{name} is not ITERATIONS:SALT:STOREDKEY:SERVERKEY"));
        };
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&i| i >= ITERATIONS)
            .ok_or_else(|| {
                format!("{name}'s iterations are not a number of at least {ITERATIONS}")
            })?;
        let bytes = |what: &str, text: &str| {
            BASE64
                .decode(text)
                .map_err(|_| format!("{name}'s {what} is not base64"))
        };
        let len = mechanism.digest().output_len();
        let credential = Credential {
            iterations,
            salt: bytes("salt", salt)?,
            stored_key: bytes("stored key", stored)?,
            server_key: bytes("server key", server)?,
        };
        if credential.stored_key.len() != len || credential.server_key.len() != len {
            return Err(format!("{name}'s keys are not {len} bytes each"));
        }
        if credential.salt.is_empty() {
            return Err(format!("{name}'s salt is empty"));
        }
        Ok((mechanism, credential))
    }
}

/// The salt of `name`'s keys: the same for every token of the name (see the module's
/// comment).
pub fn salt_of(name: &str) -> Vec<u8> {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"strom SCRAM salt\0");
    context.update(name.as_bytes());
    context.finish().as_ref()[..16].to_vec()
}

/// The tokens file's SCRAM fields for `token` of `name`, every mechanism's.
pub fn fields(name: &str, token: &str) -> String {
    let salt = salt_of(name);
    Mechanism::ALL
        .iter()
        .map(|&m| Credential::of(m, token, &salt, ITERATIONS).field(m))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_reads_back_and_proves_only_its_token() {
        for mechanism in Mechanism::ALL {
            let made = Credential::of(mechanism, "t1", &salt_of("orders"), ITERATIONS);
            let (read, credential) = Credential::parse(&made.field(mechanism)).unwrap();
            assert_eq!((read, &credential), (mechanism, &made));
            // A client's proof, made as a client makes it from the token.
            let proof = |token: &str| {
                let other = Credential::of(mechanism, token, &made.salt, ITERATIONS);
                let mut salted = vec![0u8; mechanism.digest().output_len()];
                let rounds = NonZeroU32::new(ITERATIONS).unwrap();
                pbkdf2::derive(
                    mechanism.pbkdf2(),
                    rounds,
                    &made.salt,
                    token.as_bytes(),
                    &mut salted,
                );
                let client_key = mechanism.hmac_of(&salted, b"Client Key");
                let signature = mechanism.hmac_of(&other.stored_key, b"auth");
                client_key
                    .iter()
                    .zip(signature)
                    .map(|(k, s)| k ^ s)
                    .collect::<Vec<u8>>()
            };
            assert!(credential.proves(mechanism, b"auth", &proof("t1")));
            assert!(!credential.proves(mechanism, b"auth", &proof("t2")));
            assert!(!credential.proves(mechanism, b"other", &proof("t1")));
            assert!(!credential.proves(mechanism, b"auth", b"short"));
        }
    }

    #[test]
    fn bad_fields_say_what_is_wrong() {
        let good =
            Credential::of(Mechanism::Sha256, "t", b"salt", ITERATIONS).field(Mechanism::Sha256);
        for (field, said) in [
            ("SCRAM-SHA-1=4096:a:b:c", "not a mechanism"),
            ("SCRAM-SHA-256", "is not MECHANISM="),
            ("SCRAM-SHA-256=4096:a:b", "ITERATIONS:SALT"),
            (&good.replace("=4096:", "=100:"), "at least 4096"),
            (&good.replace(":c2FsdA==:", ":!!!!:"), "not base64"),
            (&good.replace(":c2FsdA==:", "::"), "salt is empty"),
            (&good.replace(":c2FsdA==:", ":c2FsdA==:%"), "not base64"),
        ] {
            let err = Credential::parse(field).unwrap_err();
            assert!(err.contains(said), "{field}: {err}");
        }
        let short = format!(
            "SCRAM-SHA-256=4096:c2FsdA==:{}:{}",
            BASE64.encode([1; 16]),
            BASE64.encode([1; 16])
        );
        assert!(Credential::parse(&short).unwrap_err().contains("32 bytes"));
    }
}
