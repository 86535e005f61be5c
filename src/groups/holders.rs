//! Who holds each partition a consumer group has handed out: per topic, one slot per
//! partition with the holder's id, shared with its `Member`. A map from partition to a
//! copy of the member id cost about 150 bytes a partition (a 32-byte key, a `String`
//! and its heap copy, the hash table's spare room): 2,000 one-member groups on a
//! 1,024-partition topic held about 600 MiB (hostile-client finding). A slot is 16.

use std::collections::HashMap;
use std::sync::Arc;

use super::{TopicId, Tp};

#[derive(Debug, Default)]
pub struct Holders(HashMap<TopicId, Vec<Option<Arc<str>>>>);

impl Holders {
    pub fn get(&self, (topic, partition): &Tp) -> Option<&Arc<str>> {
        self.0.get(topic)?.get(*partition as usize)?.as_ref()
    }

    pub fn contains(&self, tp: &Tp) -> bool {
        self.get(tp).is_some()
    }

    /// `tp` is a partition of the topics view (assignments come from it), so the slots
    /// of a topic never outgrow its partition count.
    pub fn insert(&mut self, (topic, partition): Tp, holder: &Arc<str>) {
        let slots = self.0.entry(topic).or_default();
        let at = partition as usize;
        if slots.len() <= at {
            slots.resize(at + 1, None);
        }
        slots[at] = Some(Arc::clone(holder));
    }

    /// Frees `tp`; a topic with no partition held any more goes, so that deleted topics
    /// leave nothing behind.
    pub fn remove(&mut self, (topic, partition): &Tp) {
        let Some(slots) = self.0.get_mut(topic) else {
            return;
        };
        if let Some(slot) = slots.get_mut(*partition as usize) {
            *slot = None;
        }
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        if slots.is_empty() {
            self.0.remove(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_inserts_and_removals_and_empty_topics_go() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut holders = Holders::default();
        holders.insert((7, 3), &a);
        holders.insert((7, 0), &b);
        holders.insert((9, 1), &a);
        assert_eq!(holders.get(&(7, 3)).map(|h| &**h), Some("a"));
        assert_eq!(holders.get(&(7, 0)).map(|h| &**h), Some("b"));
        assert!(
            !holders.contains(&(7, 1)) && !holders.contains(&(7, 9)) && !holders.contains(&(8, 0))
        );
        holders.remove(&(7, 3));
        assert!(!holders.contains(&(7, 3)));
        assert_eq!(holders.0[&7].len(), 1, "trailing free slots go");
        holders.remove(&(7, 0));
        holders.remove(&(9, 1));
        holders.remove(&(9, 5)); // never held
        assert!(holders.0.is_empty(), "{holders:?}");
    }
}
