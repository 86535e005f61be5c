//! A window's memory, which the server counts against its cap (`share/tally.rs`):
//! slots grow by doubling up to `max.in.flight`, and go back as the window empties.

use std::collections::VecDeque;

use super::{SharePartition, Slot};

impl SharePartition {
    /// Slots the window has memory for: what the server's `WindowTally` counts.
    pub fn allocated(&self) -> usize {
        self.slots.capacity()
    }

    /// Slots the window can take without more memory.
    pub fn spare(&self) -> usize {
        self.slots.capacity() - self.slots.len()
    }

    /// Whether the window holds no slot: every record handed out is finished.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds a slot at the end, growing the window's memory by doubling as a `VecDeque`
    /// does, but never past `max_in_flight`: a full window of 100,000 slots takes room
    /// for 100,000, not 131,072.
    pub(super) fn push(&mut self, slot: Slot, max_in_flight: usize) {
        let (len, capacity) = (self.slots.len(), self.slots.capacity());
        if len == capacity {
            let max = max_in_flight.max(len + 1);
            self.slots
                .reserve_exact((capacity * 2).max(8).min(max) - len);
        }
        self.slots.push_back(slot);
    }

    /// Gives back the memory of a window that emptied, and half of it when it shrank to
    /// under a quarter of it: the server counts the memory (`WindowTally`), and an empty
    /// window holding some would keep it from the other groups.
    pub(super) fn trim(&mut self) {
        let capacity = self.slots.capacity();
        if self.slots.is_empty() {
            self.slots = VecDeque::new();
        } else if self.slots.len() < capacity / 4 {
            self.slots.shrink_to(capacity / 2);
        }
    }

    /// Holds memory for exactly its slots (after a load, whose replay grew the window
    /// without knowing the group's max.in.flight).
    pub fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
    }
}
