//! A server-wide pool of bytes the Kafka listener holds in memory beyond a request's
//! frame: batches once decompressed (`compression.rs`), and Fetch responses, which
//! are copies (Kafka's record format is not strom's) held until their client has read
//! them. Each takes its bytes before it makes them, and waits while the pool is spent:
//! what a client can make the server hold is bounded, whatever it asks for.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub struct BytesPool {
    pool: Arc<Semaphore>,
    size: usize,
}

impl BytesPool {
    pub fn new(bytes: usize) -> BytesPool {
        let size = bytes.clamp(1, u32::MAX as usize);
        BytesPool {
            pool: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// The pool's size: the most one holder can take.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Takes `bytes` (at least 1, at most the pool), waiting for them.
    pub async fn take(&self, bytes: usize) -> OwnedSemaphorePermit {
        let bytes = bytes.clamp(1, self.size) as u32;
        Arc::clone(&self.pool)
            .acquire_many_owned(bytes)
            .await
            .expect("the pool is never closed")
    }

    /// Up to `want` bytes, without waiting: what the pool has if that is at least
    /// `at_least`, else None. A holder that can make do with less (a fetch answers
    /// with fewer records) so never queues behind one that needs much.
    pub fn try_take_up_to(&self, want: usize, at_least: usize) -> Option<OwnedSemaphorePermit> {
        let n = want
            .min(self.pool.available_permits())
            .min(u32::MAX as usize);
        if n < at_least.min(want).max(1) {
            return None;
        }
        Arc::clone(&self.pool).try_acquire_many_owned(n as u32).ok()
    }

    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.pool.available_permits()
    }
}
