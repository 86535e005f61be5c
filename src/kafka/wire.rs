//! Reading Kafka's request encoding, bounded.
//!
//! Requests are decoded here, not by `kafka-protocol`'s generated decoders: those size
//! a `Vec` from an array's length before reading a single element, so an 8-byte
//! request declaring fifty million topics would make the server allocate gigabytes and
//! abort (kafka-protocol-rs pull requests #152 and #200, open). Every length read here
//! is checked against the bytes left in the frame before anything is allocated, and a
//! decoded request never holds more than about its frame's bytes (strings are copies
//! of their bytes, byte fields slices of the frame: what outlives the request, a
//! group's member metadata, is copied where it is kept). Responses, built by the server from values it trusts, are
//! encoded by `kafka-protocol`.

use bytes::{Buf, Bytes};

/// Why a request could not be decoded: the connection is closed, as Kafka does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

pub type Decoded<T> = std::result::Result<T, Malformed>;

fn short(what: &str) -> Malformed {
    Malformed(format!("the request ends inside {what}"))
}

/// A request's bytes, read front to back. `flexible` versions (KIP-482) use varint
/// lengths and carry tagged fields.
pub struct Reader {
    buf: Bytes,
    pub flexible: bool,
}

impl Reader {
    pub fn new(buf: Bytes, flexible: bool) -> Reader {
        Reader { buf, flexible }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize, what: &str) -> Decoded<()> {
        match self.buf.len() >= n {
            true => Ok(()),
            false => Err(short(what)),
        }
    }

    pub fn i8(&mut self) -> Decoded<i8> {
        self.need(1, "an int8")?;
        Ok(self.buf.get_i8())
    }

    pub fn bool(&mut self) -> Decoded<bool> {
        Ok(self.i8()? != 0)
    }

    pub fn i16(&mut self) -> Decoded<i16> {
        self.need(2, "an int16")?;
        Ok(self.buf.get_i16())
    }

    pub fn i32(&mut self) -> Decoded<i32> {
        self.need(4, "an int32")?;
        Ok(self.buf.get_i32())
    }

    pub fn i64(&mut self) -> Decoded<i64> {
        self.need(8, "an int64")?;
        Ok(self.buf.get_i64())
    }

    pub fn uuid(&mut self) -> Decoded<[u8; 16]> {
        self.need(16, "a uuid")?;
        let mut id = [0; 16];
        self.buf.copy_to_slice(&mut id);
        Ok(id)
    }

    /// An unsigned varint of at most 32 bits.
    pub fn uvarint(&mut self) -> Decoded<u32> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.i8()? as u8;
            value |= u32::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                if shift == 28 && byte > 0x0f {
                    break;
                }
                return Ok(value);
            }
        }
        Err(Malformed("a varint longer than 32 bits".into()))
    }

    /// A length: an int16 or int32, or in flexible versions a varint of length + 1.
    /// `None` is null (-1, or 0 in flexible versions). Never more than what is left.
    fn length(&mut self, wide: bool, what: &str) -> Decoded<Option<usize>> {
        let len: i64 = match (self.flexible, wide) {
            (true, _) => i64::from(self.uvarint()?) - 1,
            (false, false) => i64::from(self.i16()?),
            (false, true) => i64::from(self.i32()?),
        };
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(Malformed(format!("a negative length ({n}) of {what}"))),
            n if n as usize > self.buf.len() => Err(Malformed(format!(
                "{what} of {n} (bytes or entries) in a request with {} bytes left",
                self.buf.len()
            ))),
            n => Ok(Some(n as usize)),
        }
    }

    pub fn nullable_bytes(&mut self, what: &str) -> Decoded<Option<Bytes>> {
        Ok(self.length(true, what)?.map(|len| self.buf.split_to(len)))
    }

    pub fn nullable_string(&mut self, what: &str) -> Decoded<Option<String>> {
        let Some(len) = self.length(false, what)? else {
            return Ok(None);
        };
        let bytes = self.buf.split_to(len);
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| Malformed(format!("{what} is not UTF-8")))
    }

    pub fn string(&mut self, what: &str) -> Decoded<String> {
        self.nullable_string(what)?
            .ok_or_else(|| Malformed(format!("{what} is null")))
    }

    /// An array whose entries `entry` reads; null is `None`.
    pub fn nullable_array<T>(
        &mut self,
        what: &str,
        mut entry: impl FnMut(&mut Reader) -> Decoded<T>,
    ) -> Decoded<Option<Vec<T>>> {
        let Some(len) = self.length(true, what)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(len.min(1024));
        for _ in 0..len {
            out.push(entry(self)?);
        }
        Ok(Some(out))
    }

    pub fn array<T>(
        &mut self,
        what: &str,
        entry: impl FnMut(&mut Reader) -> Decoded<T>,
    ) -> Decoded<Vec<T>> {
        Ok(self.nullable_array(what, entry)?.unwrap_or_default())
    }

    /// Skips a flexible version's tagged fields (none of which strom reads).
    pub fn tags(&mut self) -> Decoded<()> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint()? as usize;
        if count > self.buf.len() {
            return Err(short("tagged fields"));
        }
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let len = self.uvarint()? as usize;
            self.need(len, "a tagged field")?;
            self.buf.advance(len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_array_length_is_refused_before_anything_is_allocated() {
        // Fifty million entries declared, five bytes sent.
        let mut r = Reader::new(
            Bytes::from_static(&[0x02, 0xfa, 0xf0, 0x80, 0, 1, 2, 3, 4]),
            false,
        );
        let err = r.array("topics", |r| r.i8()).unwrap_err();
        assert!(err.0.contains("topics of 50000000"), "{err:?}");
        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0x0f]), true);
        assert!(r.array("topics", |r| r.i8()).is_err());
    }

    #[test]
    fn flexible_and_classic_lengths() {
        let mut r = Reader::new(Bytes::from_static(&[0, 2, b'h', b'i', 0xff, 0xff]), false);
        assert_eq!(r.string("a name").unwrap(), "hi");
        assert_eq!(r.nullable_string("a name").unwrap(), None);
        let mut r = Reader::new(Bytes::from_static(&[3, b'h', b'i', 0, 1, 5, 2, 9, 9]), true);
        assert_eq!(r.string("a name").unwrap(), "hi");
        assert_eq!(r.nullable_string("a name").unwrap(), None);
        r.tags().unwrap(); // one tag, 5, of two bytes
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn varints_past_32_bits_are_refused() {
        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]), true);
        assert_eq!(r.uvarint().unwrap(), u32::MAX);
        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x1f]), true);
        assert!(r.uvarint().is_err());
        let mut r = Reader::new(
            Bytes::from_static(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            true,
        );
        assert!(r.uvarint().is_err());
    }
}
