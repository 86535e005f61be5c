//! A group consumer following the server's assignment: the partitions it is given
//! start fetching, those taken away are committed (with auto-commit) and given back.

use std::collections::HashMap;

use tonic::Status;

use super::tasks::fetch_loop;
use super::{lock, GroupConsumer, Key, Owned};

impl GroupConsumer {
    /// Applies what the heartbeats learnt: fencing, revoked partitions, new partitions.
    pub(super) async fn reconcile(&mut self) -> Result<(), Status> {
        // A fence first, then the assignment: read the other way round, a fence between
        // the two left the assignment from before it, and its partitions were started
        // again though the server had given them to others (review finding).
        self.drop_if_fenced();
        let (assignment, failed) = {
            let shared = lock(&self.shared);
            (shared.assignment.clone(), shared.failed.clone())
        };
        if let Some(status) = failed {
            return Err(status);
        }
        let Some(assignment) = assignment else {
            return Ok(());
        };
        // Partitions of a topic that was deleted (and maybe created again): nothing to
        // commit, the old topic is gone.
        let replaced: Vec<Key> = self
            .owned
            .iter()
            .filter(|(k, o)| assignment.get(*k).is_some_and(|id| *id != o.topic_id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &replaced {
            if let Some(owned) = self.owned.remove(key) {
                owned.fetcher.abort();
            }
        }
        let revoked: Vec<Key> = self
            .owned
            .keys()
            .filter(|k| !assignment.contains_key(*k))
            .cloned()
            .collect();
        let added: Vec<(Key, String)> = assignment
            .iter()
            .filter(|(k, _)| !self.owned.contains_key(*k))
            .map(|(k, id)| (k.clone(), id.clone()))
            .collect();
        // The partitions added are ours from now on, and the heartbeats say so before
        // the waits below (committed offsets, start offsets): the server takes a
        // partition its member does not list as given back, and gave one to another
        // member while this one was still looking up where to start it, and then both
        // consumed it (hostile-client finding).
        self.report_owned(&added);
        if !revoked.is_empty() {
            if self.config.auto_commit.is_some() {
                if let Err(status) = self.commit_keys(&revoked).await {
                    tracing::warn!(%status, "commit of revoked partitions failed");
                }
            }
            for key in &revoked {
                if let Some(owned) = self.owned.remove(key) {
                    owned.fetcher.abort();
                }
            }
            self.report_owned(&added);
            self.wake_heartbeat.notify_one();
        }
        if !added.is_empty() {
            let keys: Vec<Key> = added.iter().map(|(k, _)| k.clone()).collect();
            let committed = self.committed_offsets(&keys).await?;
            let mut created = HashMap::new();
            for (key, topic_id) in added {
                let (start, committed) = match committed.get(&key) {
                    Some(&offset) => (offset, Some(offset)),
                    None => (
                        self.start_offset(&key, &committed, &mut created).await?,
                        None,
                    ),
                };
                self.start_fetcher(key, topic_id, start, committed);
            }
            lock(&self.shared).owned = self.owned.keys().cloned().collect();
        }
        Ok(())
    }

    /// What the heartbeats report as owned: the partitions fetched, and `adding`.
    pub(super) fn report_owned(&self, adding: &[(Key, String)]) {
        let owned = self.owned.keys().chain(adding.iter().map(|(k, _)| k));
        lock(&self.shared).owned = owned.cloned().collect();
    }

    /// Starts fetching a partition from `position`, replacing any fetcher it had.
    pub(super) fn start_fetcher(
        &mut self,
        key: Key,
        topic_id: String,
        position: u64,
        committed: Option<u64>,
    ) {
        self.generation += 1;
        let fetcher = tokio::spawn(fetch_loop(
            self.client.clone(),
            key.clone(),
            position,
            self.config.max_bytes,
            self.config.on_out_of_range,
            self.generation,
            self.tx.clone(),
        ));
        let owned = Owned {
            topic_id,
            position,
            committed,
            fetcher,
            generation: self.generation,
        };
        if let Some(old) = self.owned.insert(key, owned) {
            old.fetcher.abort();
        }
    }
}
