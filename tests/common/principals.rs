//! Principals for the tests of tokens, the access control list and quotas: each
//! principal's token is its name twice.

use std::path::Path;

use strom::client::{Client, ConnectOptions};
use strom::grpc::auth::file_line;

use super::server::TestServer;

/// A tokens file at `file` with a token for each of `names`.
pub fn write_tokens(file: &Path, names: &[&str]) {
    let lines: Vec<String> = names
        .iter()
        .map(|n| file_line(n, &format!("{n}{n}")).unwrap())
        .collect();
    std::fs::write(file, lines.join("\n")).unwrap();
}

/// A client of `server` carrying the token of principal `name`.
pub async fn as_principal(server: &TestServer, name: &str) -> Client {
    let options = ConnectOptions {
        tls: None,
        token: Some(format!("{name}{name}")),
    };
    Client::connect_with(&server.addr.to_string(), options)
        .await
        .unwrap()
}
