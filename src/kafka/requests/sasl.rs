//! The two SASL requests: SaslHandshake (the mechanism the client picks) and
//! SaslAuthenticate (the mechanism's bytes).

use bytes::Bytes;

use crate::kafka::wire::{Decoded, Malformed, Reader};

/// A SaslHandshake request: the mechanism's name.
pub fn handshake(r: &mut Reader) -> Decoded<String> {
    let mechanism = r.string("the SASL mechanism")?;
    r.tags()?;
    Ok(mechanism)
}

/// A SaslAuthenticate request: the mechanism's bytes.
pub fn authenticate(r: &mut Reader) -> Decoded<Bytes> {
    let bytes = r
        .nullable_bytes("the SASL bytes")?
        .ok_or_else(|| Malformed("SaslAuthenticate with null bytes".into()))?;
    r.tags()?;
    Ok(bytes)
}
