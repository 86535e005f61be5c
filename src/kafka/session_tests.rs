//! Tests of `session.rs`.

use super::*;

fn security(dir: &std::path::Path, lines: &str) -> Security {
    let file = dir.join("tokens");
    std::fs::write(&file, lines).unwrap();
    Security {
        tokens: Some(Tokens::load(&file).unwrap()),
        ..Security::default()
    }
}

fn line(name: &str, token: &str) -> String {
    crate::grpc::auth::file_line(name, token).unwrap() + "\n"
}

#[test]
fn plain_takes_the_token_of_the_name_given_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let security = security(dir.path(), &(line("orders", "t1") + &line("ops", "t2")));
    let tokens = security.tokens.as_ref().unwrap();
    assert_eq!(&*plain(tokens, b"\0orders\0t1").unwrap().0 .0, "orders");
    assert_eq!(
        &*plain(tokens, b"orders\0orders\0t1").unwrap().0 .0,
        "orders"
    );
    for refused in [
        &b"\0orders\0t2"[..], // another name's token
        b"\0orders\0t3",
        b"\0\0t1",
        b"ops\0orders\0t1", // acting for another
        b"orders\0t1",
        b"\0orders\0t1\0",
        b"\0orders\0\xff",
        b"",
    ] {
        assert!(plain(tokens, refused).is_err(), "{refused:?}");
    }
}

#[test]
fn only_versions_and_sasl_come_before_authentication_and_a_revoked_token_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let security = security(dir.path(), &line("orders", "t1"));
    let mut session = Session::new(&security, Some("cn".into()));
    assert!(!session.authenticated());
    assert_eq!(session.max_frame(1 << 20), UNAUTHENTICATED_MAX_FRAME);
    session.admit(&security, key::API_VERSIONS).unwrap();
    session.admit(&security, key::PRODUCE).unwrap_err();
    session
        .admit(&security, key::SASL_AUTHENTICATE)
        .unwrap_err();
    session.admit(&security, key::SASL_HANDSHAKE).unwrap();
    assert_eq!(
        session.handshake(&security, "GSSAPI").error_code,
        UNSUPPORTED_SASL_MECHANISM
    );
    session
        .admit(&security, key::SASL_AUTHENTICATE)
        .unwrap_err();
    assert_eq!(session.handshake(&security, PLAIN).error_code, 0);
    session.admit(&security, key::SASL_AUTHENTICATE).unwrap();
    let (failed, close) = session.authenticate(&security, &Bytes::from("\0orders\0no"));
    assert_eq!(
        (failed.error_code, close),
        (SASL_AUTHENTICATION_FAILED, true)
    );
    assert!(!session.authenticated());
    session.stage = Stage::Handshaken(Pending::Plain);
    let (ok, close) = session.authenticate(&security, &Bytes::from("\0orders\0t1"));
    assert_eq!((ok.error_code, close), (0, false));
    assert!(session.authenticated());
    // The token names the caller, not the certificate.
    assert_eq!(session.who, Some(Principal("orders".into())));
    session.admit(&security, key::PRODUCE).unwrap();
    session.admit(&security, key::SASL_HANDSHAKE).unwrap_err();
    // A reload that keeps the token changes nothing; one that drops it ends it.
    let file = dir.path().join("tokens");
    std::fs::write(&file, line("orders", "t1") + &line("ops", "t2")).unwrap();
    security.tokens.as_ref().unwrap().reload().unwrap();
    session.admit(&security, key::FETCH).unwrap();
    std::fs::write(&file, line("ops", "t2")).unwrap();
    security.tokens.as_ref().unwrap().reload().unwrap();
    session.admit(&security, key::FETCH).unwrap_err();
}

#[test]
fn without_tokens_a_certificate_names_the_caller_and_sasl_is_refused() {
    let security = Security::default();
    let mut session = Session::new(&security, Some("reader".into()));
    assert!(session.authenticated());
    assert_eq!(session.who, Some(Principal("reader".into())));
    session.admit(&security, key::PRODUCE).unwrap();
    assert_eq!(
        session.handshake(&security, PLAIN).error_code,
        ILLEGAL_SASL_STATE
    );
    assert!(matches!(session.access(&security), Access::Everything));
}

#[test]
fn scram_goes_through_the_session_in_two_steps_and_a_revoked_token_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let line = crate::grpc::auth::file_line_with_scram("orders", "t1").unwrap();
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let security = Security {
        tokens: Some(Tokens::load(&file).unwrap()),
        ..Security::default()
    };
    let scram = |token: &str| {
        let mut session = Session::new(&security, None);
        session.admit(&security, key::SASL_HANDSHAKE).unwrap();
        let handshake = session.handshake(&security, "SCRAM-SHA-256");
        assert_eq!(handshake.error_code, 0);
        session.admit(&security, key::SASL_AUTHENTICATE).unwrap();
        let bare = "n=orders,r=abc";
        let first = Bytes::from(format!("n,,{bare}"));
        let (answer, close) = session.authenticate(&security, &first);
        assert_eq!((answer.error_code, close), (0, false));
        assert!(!session.authenticated());
        // Between the two steps, only the next SaslAuthenticate is taken.
        session.admit(&security, key::PRODUCE).unwrap_err();
        session.admit(&security, key::SASL_AUTHENTICATE).unwrap();
        let server_first = String::from_utf8(answer.auth_bytes.to_vec()).unwrap();
        let (last, signature) =
            crate::kafka::scram::tests::client_final(Mechanism::Sha256, bare, &server_first, token);
        let (answer, close) = session.authenticate(&security, &Bytes::from(last));
        (session, answer, close, signature)
    };
    let (mut session, answer, close, signature) = scram("t1");
    assert_eq!((answer.error_code, close), (0, false));
    assert_eq!(answer.auth_bytes, signature.as_bytes());
    assert!(session.authenticated());
    assert_eq!(session.who, Some(Principal("orders".into())));
    session.admit(&security, key::PRODUCE).unwrap();
    let (failed, answer, close, _) = scram("t2");
    assert_eq!(
        (answer.error_code, close),
        (SASL_AUTHENTICATION_FAILED, true)
    );
    assert!(!failed.authenticated());
    // Removing the token's line ends the connection SCRAM authenticated, as PLAIN's.
    std::fs::write(&file, crate::grpc::auth::file_line("ops", "t9").unwrap()).unwrap();
    security.tokens.as_ref().unwrap().reload().unwrap();
    session.admit(&security, key::FETCH).unwrap_err();
}
