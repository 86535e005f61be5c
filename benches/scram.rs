//! What a Kafka client's SCRAM authentication costs the server: `cargo bench --bench
//! scram`.
//!
//! At the client's final message the server checks its proof against each of the
//! name's tokens' keys (an HMAC and a hash each) and signs its answer (one HMAC);
//! nothing else in the exchange is more than string handling. PBKDF2 runs only where
//! keys are made (`strom token new`), measured here for comparison: a server that ran
//! it at each authentication would be a cheap target for strangers.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use strom::grpc::auth::scram::{fields, salt_of, Credential, Mechanism, ITERATIONS};

fn authentication(c: &mut Criterion) {
    let auth_message = b"n=orders,r=fyko+d2lbbFgONRv9qkxdawL,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
    for mechanism in Mechanism::ALL {
        let keys = Credential::of(mechanism, "token", &salt_of("orders"), ITERATIONS);
        let proof = vec![7u8; keys.stored_key.len()];
        c.bench_function(
            &format!("{} proof checked and answer signed", mechanism.name()),
            |b| {
                b.iter(|| {
                    let proved = keys.proves(mechanism, black_box(auth_message), black_box(&proof));
                    black_box((proved, keys.server_signature(mechanism, auth_message)))
                })
            },
        );
    }
    c.bench_function(
        "strom token new's keys (both mechanisms, PBKDF2 4096)",
        |b| b.iter(|| black_box(fields("orders", black_box("token")))),
    );
}

criterion_group!(benches, authentication);
criterion_main!(benches);
