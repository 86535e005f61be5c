//! Log lines that a flood of clients could multiply (refused connections, failed
//! handshakes and authentications, malformed requests): each kind at most once a
//! second, with how many were held back since its last line, so that an operator sees
//! them and an attacker cannot fill the disk with them.

pub use crate::every_second::EverySecond;

/// The kinds, each limited on its own.
#[derive(Default)]
pub struct Logs {
    /// Connections refused at `max_connections`, at `max_connections_per_address` or
    /// at the strangers' share.
    pub refused: EverySecond,
    pub handshakes: EverySecond,
    pub authentications: EverySecond,
    /// Requests that closed their connection: malformed, oversized, out of turn.
    pub closed: EverySecond,
}
