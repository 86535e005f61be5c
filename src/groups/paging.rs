//! Answers a page at a time (DescribeGroup, FetchOffsets): how much a page may still
//! take, and the tokens that say where the next one starts. A token sorts as the
//! entries do, by topic name and then partition, since clients check that tokens only
//! go forward: topic names use no character below '-', so the ',' after one sorts it
//! before any longer name, and partitions have ten digits.

use crate::error::{quote, Error};

/// The token of a page that goes on after this partition (DescribeGroup, FetchOffsets).
pub fn partition_token(topic: &str, partition: u32) -> String {
    format!("p:{topic},{partition:010}")
}

/// The partition a `partition_token` names.
pub fn partition_from(token: &str) -> Option<(String, u32)> {
    let (topic, p) = token.strip_prefix("p:")?.rsplit_once(',')?;
    Some((topic.into(), p.parse().ok()?))
}

pub fn bad_token(rpc: &str, token: &str) -> Error {
    Error::InvalidArgument(format!(
        "page_token {} is not one {rpc} gave: pass a next_page_token as it came, or none for the first page",
        quote(token)
    ))
}

/// What a page may still take: entries and bytes, and always its first entry.
pub struct Room {
    pub entries: usize,
    pub bytes: usize,
    pub taken: usize,
}

impl Room {
    pub fn take(&mut self, bytes: usize) -> bool {
        let fits = self.taken == 0 || (self.entries > 0 && bytes <= self.bytes);
        if fits {
            self.taken += 1;
            self.entries = self.entries.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(bytes);
        }
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_takes_its_first_entry_whatever_its_size_and_stops_at_either_limit() {
        let mut room = Room {
            entries: 3,
            bytes: 100,
            taken: 0,
        };
        assert!(room.take(1_000));
        assert!(!room.take(1));
        let mut room = Room {
            entries: 2,
            bytes: 100,
            taken: 0,
        };
        assert!(room.take(10) && room.take(10));
        assert!(!room.take(10));
    }
}
