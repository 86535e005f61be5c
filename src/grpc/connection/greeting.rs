//! When a new connection's client has greeted: the silent-client timeout's test.

/// What a client must send first: HTTP/2's 24-byte preface, then a SETTINGS frame (a
/// 9-byte header, the first three bytes its payload's length, then the payload). Until
/// the preface is whole HTTP/2's handshake has not ended and no keepalive ping is sent,
/// so a client that sends part of it and stops is caught only by the silent timeout.
/// (Any byte used to count: half a preface held a connection for ever.)
#[derive(Default)]
pub(super) struct Greeting {
    seen: u64,
    length: [u8; 3],
}

const PREFACE: u64 = 24;
const FRAME_HEADER: u64 = 9;

impl Greeting {
    /// Takes the next bytes read; whether the greeting is now whole.
    pub(super) fn take(&mut self, bytes: &[u8]) -> bool {
        for (i, &byte) in bytes.iter().enumerate() {
            match self.seen + i as u64 {
                at if at < PREFACE => continue,
                at if at < PREFACE + 3 => self.length[(at - PREFACE) as usize] = byte,
                _ => break,
            }
        }
        self.seen += bytes.len() as u64;
        let [a, b, c] = self.length;
        let payload = u32::from_be_bytes([0, a, b, c]) as u64;
        self.seen >= PREFACE + FRAME_HEADER + payload
    }
}
