//! A message's bytes as they arrived, in several frames, held without copying the
//! large ones.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Frames at least this long are held as they are when a message spans frames; shorter
/// ones are copied together. A held frame keeps its read buffer's allocation alive, so
/// holding small ones would let a peer sending one-byte frames make the reader hold
/// 40-75 bytes per byte of message (measured); HTTP/2 reads into buffers of about
/// 64 KiB, so a frame this long keeps little more than itself.
const HOLD_AT_LEAST: usize = 64 << 10;

/// Bytes in pieces, in order. As a [`Buf`], its `copy_to_bytes` slices a piece when the
/// piece holds all the bytes asked for: prost takes `bytes` fields that way, so a record
/// inside one frame stays a slice of that frame, and only one that a frame boundary cuts
/// is copied.
#[derive(Debug, Default)]
pub struct Rope {
    /// The piece being read: empty only at the end, so that `chunk` is too. Apart from
    /// the others, so that a message whole in one frame allocates nothing here.
    front: Bytes,
    /// The pieces after it, none empty.
    rest: VecDeque<Bytes>,
    len: usize,
}

impl From<Bytes> for Rope {
    fn from(bytes: Bytes) -> Rope {
        Rope {
            len: bytes.len(),
            front: bytes,
            rest: VecDeque::new(),
        }
    }
}

impl Rope {
    fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        if self.front.is_empty() {
            self.front = piece;
        } else if !piece.is_empty() {
            self.rest.push_back(piece);
        }
    }

    /// How many pieces it has.
    #[cfg(test)]
    fn pieces(&self) -> usize {
        usize::from(!self.front.is_empty()) + self.rest.len()
    }

    /// Moves on to the next piece, the front one being used up.
    fn next_piece(&mut self) {
        self.front = self.rest.pop_front().unwrap_or_default();
    }
}

/// A rope being gathered from frames as they arrive.
#[derive(Debug, Default)]
pub struct Gathering {
    rope: Rope,
    /// Short pieces, copied together; pushed to the rope when a long one follows.
    small: BytesMut,
}

impl Gathering {
    pub fn len(&self) -> usize {
        self.rope.len + self.small.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many pieces are held (not copied).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.rope.pieces()
    }

    /// Appends `piece`: held if it is long, else copied.
    pub fn push(&mut self, piece: Bytes) {
        if piece.len() < HOLD_AT_LEAST {
            self.small.extend_from_slice(&piece);
            return;
        }
        self.flush_small();
        self.rope.push(piece);
    }

    /// The bytes pushed, ready to read.
    pub fn finish(mut self) -> Rope {
        self.flush_small();
        self.rope
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            self.rope.push(self.small.split().freeze());
        }
    }
}

impl Buf for Rope {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        &self.front
    }

    fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len, "advance past the end of a rope");
        self.len -= n;
        while n > 0 {
            if self.front.len() > n {
                self.front.advance(n);
                return;
            }
            n -= self.front.len();
            self.next_piece();
        }
    }

    fn copy_to_bytes(&mut self, n: usize) -> Bytes {
        assert!(n <= self.len, "copy_to_bytes past the end of a rope");
        if self.front.len() >= n {
            let out = self.front.split_to(n);
            if self.front.is_empty() {
                self.next_piece();
            }
            self.len -= n;
            return out;
        }
        let mut out = BytesMut::with_capacity(n);
        out.put(self.take(n));
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_pieces_are_held_short_ones_copied_and_fields_inside_a_piece_sliced() {
        let long = Bytes::from(vec![1u8; HOLD_AT_LEAST]);
        let mut gathering = Gathering::default();
        for byte in [7u8, 8, 9] {
            gathering.push(Bytes::from(vec![byte])); // one-byte frames: copied, not held
        }
        assert_eq!(gathering.held(), 0);
        gathering.push(long.clone());
        gathering.push(Bytes::from_static(b"end"));
        let mut rope = gathering.finish();
        assert_eq!(rope.pieces(), 3);
        assert_eq!(rope.remaining(), 3 + HOLD_AT_LEAST + 3);
        // Across the first boundary: copied.
        assert_eq!(rope.copy_to_bytes(4)[..], [7, 8, 9, 1]);
        // Inside the long piece: a slice of it.
        let inside = rope.copy_to_bytes(100);
        assert_eq!(inside.as_ptr(), long[1..].as_ptr(), "copied, not sliced");
        rope.advance(HOLD_AT_LEAST - 102);
        assert_eq!(rope.get_u8(), 1);
        assert_eq!(rope.copy_to_bytes(3)[..], b"end"[..]);
        assert!(!rope.has_remaining() && rope.pieces() == 0);
    }
}
