//! The key map of a compaction pass: the newest offset of each key.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// The newest offset of each key, keyed by a 128-bit hash of the key (two SipHash-1-3
/// hashes with keys random per pass): 16 bytes of hash and 8 of offset per key, as
/// Kafka's 24. Two keys share a hash with a chance of about n²/2¹²⁹, so that a record
/// would be removed for another key's newer one: for a billion keys, 10⁻²¹.
pub(super) struct KeyMap {
    map: HashMap<u128, u64, BuildHasherDefault<LowBits>>,
    hashers: (RandomState, RandomState),
    max_keys: usize,
    pub(super) peak_bytes: usize,
}

impl KeyMap {
    pub(super) fn new(max_keys: usize) -> KeyMap {
        KeyMap {
            map: HashMap::default(),
            hashers: (RandomState::new(), RandomState::new()),
            max_keys,
            peak_bytes: 0,
        }
    }

    fn hash(&self, key: &[u8]) -> u128 {
        let (a, b) = (self.hashers.0.hash_one(key), self.hashers.1.hash_one(key));
        (u128::from(a) << 64) | u128::from(b)
    }

    /// Records `offset` as the newest of `key`; false when the key is new and the map
    /// is full.
    pub(super) fn insert(&mut self, key: &[u8], offset: u64) -> bool {
        let hash = self.hash(key);
        if self.map.len() >= self.max_keys && !self.map.contains_key(&hash) {
            return false;
        }
        self.map.insert(hash, offset);
        // Buckets of 24 bytes and a control byte each.
        self.peak_bytes = self.peak_bytes.max(self.map.capacity() * 8 / 7 * 25);
        true
    }

    /// Keys mapped so far.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn newest(&self, key: &[u8]) -> Option<u64> {
        self.map.get(&self.hash(key)).copied()
    }
}

/// The map's keys are already uniform hashes: use their low bits as they are.
#[derive(Default)]
struct LowBits(u64);

impl Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}
