//! Tests of `scram.rs`: RFC 7677's example exchange, and a client made here from the
//! RFC's steps for the rest.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};

use super::*;
use crate::grpc::auth::scram::Credential;
use crate::grpc::auth::{file_line, file_line_with_scram};

fn tokens(dir: &std::path::Path, lines: &[String]) -> Tokens {
    let file = dir.join("tokens");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    Tokens::load(&file).unwrap()
}

#[test]
fn the_example_of_rfc_7677_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let keys = Credential::of(Mechanism::Sha256, "pencil", &salt, 4096);
    let line = format!(
        "{} {}",
        file_line("user", "pencil").unwrap(),
        keys.field(Mechanism::Sha256)
    );
    let tokens = tokens(dir.path(), &[line]);
    let mut exchange = Exchange::new(Mechanism::Sha256);
    let first = exchange.step(
        &tokens,
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    );
    let expected =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    assert_eq!(first, Step::Continue(expected.into()));
    let last = exchange.step(
        &tokens,
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "unused",
    );
    let Step::Done {
        principal,
        server_final,
        ..
    } = last
    else {
        panic!("{last:?}");
    };
    assert_eq!(principal, Principal("user".into()));
    assert_eq!(
        server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
    );
}

/// A client's final message for `token`, answering `server_first`, and the server
/// signature it expects.
pub(crate) fn client_final(
    mechanism: Mechanism,
    client_first_bare: &str,
    server_first: &str,
    token: &str,
) -> (String, String) {
    let (hmac_alg, digest_alg, pbkdf2_alg) = match mechanism {
        Mechanism::Sha256 => (
            hmac::HMAC_SHA256,
            &digest::SHA256,
            pbkdf2::PBKDF2_HMAC_SHA256,
        ),
        Mechanism::Sha512 => (
            hmac::HMAC_SHA512,
            &digest::SHA512,
            pbkdf2::PBKDF2_HMAC_SHA512,
        ),
    };
    let mut fields = server_first.split(',');
    let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
    let salt = BASE64
        .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
        .unwrap();
    let rounds: u32 = fields.next().unwrap()[2..].parse().unwrap();
    let mut salted = vec![0; digest_alg.output_len()];
    let rounds = NonZeroU32::new(rounds).unwrap();
    pbkdf2::derive(pbkdf2_alg, rounds, &salt, token.as_bytes(), &mut salted);
    let sign = |key: &[u8], message: &[u8]| hmac::sign(&hmac::Key::new(hmac_alg, key), message);
    let client_key = sign(&salted, b"Client Key");
    let stored_key = digest::digest(digest_alg, client_key.as_ref());
    let without_proof = format!("c=biws,r={nonce}");
    let auth = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = sign(stored_key.as_ref(), auth.as_bytes());
    let proof: Vec<u8> = client_key
        .as_ref()
        .iter()
        .zip(signature.as_ref())
        .map(|(k, s)| k ^ s)
        .collect();
    let server_key = sign(&salted, b"Server Key");
    let verifier = sign(server_key.as_ref(), auth.as_bytes());
    (
        format!("{without_proof},p={}", BASE64.encode(proof)),
        format!("v={}", BASE64.encode(verifier)),
    )
}

/// A whole exchange as `name` with `token`: what the server's last step said.
fn exchange(tokens: &Tokens, mechanism: Mechanism, name: &str, token: &str) -> Step {
    let mut exchange = Exchange::new(mechanism);
    let bare = format!("n={name},r=client-nonce");
    let first = exchange.step(tokens, format!("n,,{bare}").as_bytes(), "server-nonce");
    let Step::Continue(server_first) = first else {
        return first;
    };
    let server_first = String::from_utf8(server_first).unwrap();
    let (last, _) = client_final(mechanism, &bare, &server_first, token);
    exchange.step(tokens, last.as_bytes(), "unused")
}

#[test]
fn each_token_of_a_name_authenticates_by_either_mechanism_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(
        dir.path(),
        &[
            file_line_with_scram("orders", "t1").unwrap(),
            file_line_with_scram("orders", "t2").unwrap(),
            file_line_with_scram("o,=x", "t3").unwrap(),
            file_line("plain-only", "t4").unwrap(),
        ],
    );
    for mechanism in Mechanism::ALL {
        for token in ["t1", "t2"] {
            let Step::Done {
                principal, digest, ..
            } = exchange(&tokens, mechanism, "orders", token)
            else {
                panic!("{token} refused");
            };
            assert_eq!(principal, Principal("orders".into()));
            assert_eq!(tokens.known(&digest), Some(principal));
        }
        // A name with a comma and an equals sign, escaped as SCRAM escapes them.
        let done = exchange(&tokens, mechanism, "o=2C=3Dx", "t3");
        assert!(matches!(done, Step::Done { principal, .. } if &*principal.0 == "o,=x"));
        for (name, token) in [
            ("orders", "t3"),     // another name's token
            ("orders", "t9"),     // no one's
            ("nobody", "t1"),     // a name not listed
            ("plain-only", "t4"), // a token without SCRAM keys
        ] {
            let refused = exchange(&tokens, mechanism, name, token);
            assert!(
                matches!(&refused, Step::Failed(why) if why.contains("not a pair")),
                "{name} {token}: {refused:?}"
            );
        }
    }
}

#[test]
fn the_server_proves_it_knew_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path(), &[file_line_with_scram("orders", "t1").unwrap()]);
    let mut exchange = Exchange::new(Mechanism::Sha512);
    let bare = "n=orders,r=abc";
    let Step::Continue(first) = exchange.step(&tokens, format!("n,,{bare}").as_bytes(), "xyz")
    else {
        panic!()
    };
    let first = String::from_utf8(first).unwrap();
    assert!(first.starts_with("r=abcxyz,s="), "{first}");
    let (last, expected) = client_final(Mechanism::Sha512, bare, &first, "t1");
    let Step::Done { server_final, .. } = exchange.step(&tokens, last.as_bytes(), "") else {
        panic!()
    };
    assert_eq!(String::from_utf8(server_final).unwrap(), expected);
}

#[test]
fn an_unknown_name_is_answered_as_a_known_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path(), &[file_line_with_scram("orders", "t1").unwrap()]);
    let first = |name: &str| {
        let mut exchange = Exchange::new(Mechanism::Sha256);
        match exchange.step(&tokens, format!("n,,n={name},r=a").as_bytes(), "b") {
            Step::Continue(answer) => String::from_utf8(answer).unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let salt = |name: &str| BASE64.encode(salt_of(name));
    assert_eq!(first("orders"), format!("r=ab,s={},i=4096", salt("orders")));
    assert_eq!(first("nobody"), format!("r=ab,s={},i=4096", salt("nobody")));
}

#[test]
fn malformed_and_unoffered_messages_fail_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path(), &[file_line_with_scram("orders", "t1").unwrap()]);
    for (first, said) in [
        (&b"p=tls-unique,,n=orders,r=a"[..], "channel binding"),
        (b"n,,n=orders,r=a,tokenauth=true", "delegation tokens"),
        (b"n,,m=x,n=orders,r=a", "extension"),
        (b"n,a=ops,n=orders,r=a", "authorization id"),
        (b"n,,n=orders", "nonce"),
        (b"n,,n=orders,r=a b", "printable"),
        (b"n,,r=a", "user name"),
        (b"n,,n=or=ders,r=a", "user name"),
        (b"x,,n=orders,r=a", "client-first"),
        (b"n,,", "user name"),
        (b"\xff", "UTF-8"),
    ] {
        let mut exchange = Exchange::new(Mechanism::Sha256);
        let step = exchange.step(&tokens, first, "b");
        assert!(
            matches!(&step, Step::Failed(why) if why.contains(said)),
            "{:?}: {step:?}",
            String::from_utf8_lossy(first)
        );
    }
    // The final message must carry back the header and the whole nonce.
    let bare = "n=orders,r=a";
    for (tamper, said) in [
        (("c=biws,r=ab", "c=eSws,r=ab"), "header"),
        (("c=biws,r=ab", "c=biws,r=a"), "nonce"),
        ((",p=", ",q="), "proof"),
    ] {
        let mut exchange = Exchange::new(Mechanism::Sha256);
        let Step::Continue(first) = exchange.step(&tokens, format!("n,,{bare}").as_bytes(), "b")
        else {
            panic!()
        };
        let first = String::from_utf8(first).unwrap();
        let (last, _) = client_final(Mechanism::Sha256, bare, &first, "t1");
        let last = last.replace(tamper.0, tamper.1);
        let step = exchange.step(&tokens, last.as_bytes(), "");
        assert!(
            matches!(&step, Step::Failed(why) if why.contains(said)),
            "{last}: {step:?}"
        );
    }
}
