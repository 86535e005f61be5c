//! The server's side of a SCRAM exchange (RFC 5802; SCRAM-SHA-256 and -512, RFC 7677)
//! over Kafka's SaslAuthenticate: a state machine without I/O, fed the client's two
//! messages. The user name is the token's name, the password the token; the keys are
//! the tokens file's (`grpc/auth/scram.rs`).
//!
//! 1. client-first `n,,n=NAME,r=CLIENT_NONCE`: answered `r=NONCE,s=SALT,i=ITERATIONS`,
//!    the client's nonce followed by the server's.
//! 2. client-final `c=biws,r=NONCE,p=PROOF`: the proof is checked against each of the
//!    name's tokens' keys; answered `v=SERVER_SIGNATURE`, which proves to the client
//!    that the server knew the keys.
//!
//! A name the file does not list is answered with a salt made from the name as a
//! listed one's is, and fails at the proof: the first answer does not tell a guesser
//! which names exist. Channel binding is not offered (`p=` is refused), nor Kafka's
//! delegation tokens (`tokenauth`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::grpc::auth::scram::{salt_of, Credential, Mechanism, ITERATIONS};
use crate::grpc::auth::{Digest, Principal, Tokens};

/// Where the exchange is.
#[derive(Debug)]
pub struct Exchange {
    mechanism: Mechanism,
    sent_first: Option<First>,
}

/// What the server keeps between its first answer and the client's final message.
#[derive(Debug)]
struct First {
    name: String,
    /// `gs2-header`, which the final message's `c=` must carry back.
    header: String,
    /// client-first-message-bare, server-first-message: the start of AuthMessage.
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// What one client message gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The server's first message: the exchange goes on.
    Continue(Vec<u8>),
    /// Authenticated as the token of `digest`; the server's final message.
    Done {
        principal: Principal,
        digest: Digest,
        server_final: Vec<u8>,
    },
    Failed(String),
}

impl Exchange {
    pub fn new(mechanism: Mechanism) -> Exchange {
        Exchange {
            mechanism,
            sent_first: None,
        }
    }

    /// The client's next message; `server_nonce` is the server's part of the nonce
    /// (random, printable, without commas).
    pub fn step(&mut self, tokens: &Tokens, message: &[u8], server_nonce: &str) -> Step {
        let Ok(message) = std::str::from_utf8(message) else {
            return Step::Failed("a SCRAM message that is not UTF-8".into());
        };
        let step = match self.sent_first.take() {
            None => self.first(tokens, message, server_nonce),
            Some(first) => self.last(tokens, message, first),
        };
        step.unwrap_or_else(Step::Failed)
    }

    fn first(
        &mut self,
        tokens: &Tokens,
        message: &str,
        server_nonce: &str,
    ) -> Result<Step, String> {
        // gs2-header: a channel-binding flag, then an authorization id, each before a comma.
        let mut parts = message.splitn(3, ',');
        let (Some(binding), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("not a SCRAM client-first message (n,,n=NAME,r=NONCE)".into());
        };
        match binding {
            "n" | "y" => {}
            b if b.starts_with("p=") => {
                return Err("SCRAM with channel binding, which strom does not offer".into())
            }
            _ => return Err("not a SCRAM client-first message (n,,n=NAME,r=NONCE)".into()),
        }
        let mut attributes = bare.split(',');
        if bare.starts_with("m=") {
            return Err("a SCRAM extension strom does not know (m=)".into());
        }
        let name = attributes
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .and_then(unescape)
            .ok_or("the SCRAM message has no user name (n=)")?;
        // Printable ASCII but the comma (RFC 5802's `printable`).
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .ok_or("the SCRAM message has no nonce of printable characters (r=)")?;
        if attributes.any(|a| a.starts_with("tokenauth=")) {
            return Err("Kafka delegation tokens (tokenauth), which strom does not have".into());
        }
        if let Some(id) = authzid.strip_prefix("a=") {
            if unescape(id).as_deref() != Some(name.as_str()) {
                return Err("an authorization id other than the user name".into());
            }
        } else if !authzid.is_empty() {
            return Err("not a SCRAM client-first message (n,,n=NAME,r=NONCE)".into());
        }
        let (salt, iterations) = match tokens.scram_keys(&name, self.mechanism) {
            Some(keys) => (keys.salt, keys.iterations),
            None => (salt_of(&name), ITERATIONS),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
        let answer = server_first.clone().into_bytes();
        self.sent_first = Some(First {
            name,
            header: format!("{binding},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        });
        Ok(Step::Continue(answer))
    }

    fn last(&mut self, tokens: &Tokens, message: &str, first: First) -> Result<Step, String> {
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or("the SCRAM final message has no proof (p=)")?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or("the SCRAM final message has no channel binding (c=)")?;
        if BASE64.decode(binding).ok().as_deref() != Some(first.header.as_bytes()) {
            return Err("the SCRAM final message's c= is not the first message's header".into());
        }
        let nonce = attributes.next().and_then(|a| a.strip_prefix("r="));
        if nonce != Some(first.nonce.as_str()) {
            return Err("the SCRAM final message's nonce is not the one the server sent".into());
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| "the SCRAM proof is not base64")?;
        let auth_message = format!(
            "{},{},{without_proof}",
            first.client_first_bare, first.server_first
        );
        let keys = tokens.scram_keys(&first.name, self.mechanism);
        let proves = |credential: &Credential| {
            credential.proves(self.mechanism, auth_message.as_bytes(), &proof)
        };
        let proved = match &keys {
            Some(keys) => keys.keys.iter().find(|(credential, _)| proves(credential)),
            None => {
                // As much work as a name with one token: the time taken does not tell
                // a guesser which names exist either.
                proves(&Credential::none(self.mechanism));
                None
            }
        };
        let Some((credential, digest)) = proved else {
            // One answer for an unknown name and a wrong token.
            return Err("the user name and token are not a pair the tokens file lists with SCRAM keys (the user name is the token's name; `strom token new` writes the keys)".into());
        };
        let signature = credential.server_signature(self.mechanism, auth_message.as_bytes());
        Ok(Step::Done {
            principal: Principal(first.name.into()),
            digest: *digest,
            server_final: format!("v={}", BASE64.encode(signature)).into_bytes(),
        })
    }
}

/// A SCRAM `saslname`: `=2C` is a comma and `=3D` an equals sign; any other `=` is
/// malformed.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
#[path = "scram_tests.rs"]
pub(crate) mod tests;
