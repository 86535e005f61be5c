//! Who waits for a batch's records: one `send` per record, or a run of the records of
//! one `send_many` call, which is answered once, when its last record is.
//!
//! A `send_many` call's records may go to several batches (partitions, or more bytes
//! than one batch holds), so its answer is assembled here as each batch is answered.
//! A batch holds one `Waiter` per run of consecutive records of the same call, not one
//! per record: a call of 1,000 records costs one channel and one wake-up, where 1,000
//! `send`s cost 1,000 of each (most of the `Producer`'s CPU, BENCHMARKS.md).

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tonic::Status;

use super::{Ack, AckSender};

pub(super) type ManySender = oneshot::Sender<Result<Vec<Ack>, Status>>;

/// The answer to one `send_many` call, filled in as its batches are answered.
pub(super) struct ManyAcks {
    acks: Vec<Ack>,
    /// Records not answered yet.
    remaining: usize,
    /// Taken by the first failure, or by the last acknowledgement.
    reply: Option<ManySender>,
}

pub(super) type Call = Arc<Mutex<ManyAcks>>;

/// A call for `records` records, answered on `reply`.
pub(super) fn call(records: usize, reply: ManySender) -> Call {
    Arc::new(Mutex::new(ManyAcks {
        acks: vec![
            Ack {
                partition: 0,
                offset: 0
            };
            records
        ],
        remaining: records,
        reply: Some(reply),
    }))
}

/// Fails a call that never got its records into batches (the first failure answers;
/// records already in batches may still be stored).
pub(super) fn fail_call(call: &Call, status: Status) {
    let reply = call.lock().expect("not poisoned").reply.take();
    if let Some(reply) = reply {
        let _ = reply.send(Err(status));
    }
}

/// Who waits for the next record or records of a batch.
pub(super) enum Waiter {
    One(AckSender),
    /// Records `first..first + count` of a `send_many` call.
    Run {
        call: Call,
        first: usize,
        count: usize,
    },
}

/// The waiters of one batch, in the order of its records.
#[derive(Default)]
pub(super) struct Waiters(Vec<Waiter>);

impl Waiters {
    pub(super) fn push_one(&mut self, ack: AckSender) {
        self.0.push(Waiter::One(ack));
    }

    /// Adds record `index` of `call`: it extends the last run if it follows it.
    pub(super) fn push_of(&mut self, call: &Call, index: usize) {
        if let Some(Waiter::Run {
            call: last,
            first,
            count,
        }) = self.0.last_mut()
        {
            if Arc::ptr_eq(last, call) && *first + *count == index {
                *count += 1;
                return;
            }
        }
        self.0.push(Waiter::Run {
            call: Arc::clone(call),
            first: index,
            count: 1,
        });
    }

    /// The batch was stored at `base_offset` of `partition`: its records are answered in
    /// order, a call once all of its records are.
    pub(super) fn acknowledge(self, partition: u32, base_offset: u64) {
        let mut offset = base_offset;
        for waiter in self.0 {
            match waiter {
                Waiter::One(ack) => {
                    let _ = ack.send(Ok(Ack { partition, offset }));
                    offset += 1;
                }
                Waiter::Run { call, first, count } => {
                    let mut state = call.lock().expect("not poisoned");
                    for (n, ack) in state.acks[first..first + count].iter_mut().enumerate() {
                        *ack = Ack {
                            partition,
                            offset: offset + n as u64,
                        };
                    }
                    offset += count as u64;
                    state.remaining -= count;
                    if state.remaining == 0 {
                        if let Some(reply) = state.reply.take() {
                            let _ = reply.send(Ok(std::mem::take(&mut state.acks)));
                        }
                    }
                }
            }
        }
    }

    /// The batch failed for good: every waiter gets `status` (a call, if no earlier
    /// failure answered it).
    pub(super) fn fail(self, status: &Status) {
        for waiter in self.0 {
            match waiter {
                Waiter::One(ack) => {
                    let _ = ack.send(Err(status.clone()));
                }
                Waiter::Run { call, .. } => fail_call(&call, status.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_answered_once_its_runs_in_every_batch_are() {
        let (tx, mut rx) = oneshot::channel();
        let call = call(5, tx);
        // Records 0, 2 and 4 in one partition's batch, 1 and 3 in another's.
        let (mut a, mut b) = (Waiters::default(), Waiters::default());
        for i in [0, 2, 4] {
            a.push_of(&call, i);
        }
        b.push_of(&call, 1);
        b.push_of(&call, 3);
        assert_eq!(
            a.0.len(),
            3,
            "records that do not follow each other are runs of one"
        );
        b.acknowledge(1, 10);
        assert!(
            rx.try_recv().is_err(),
            "answered before all its records were"
        );
        a.acknowledge(0, 20);
        let acks = rx.try_recv().unwrap().unwrap();
        let want = [(0, 20), (1, 10), (0, 21), (1, 11), (0, 22)];
        let got: Vec<_> = acks.iter().map(|a| (a.partition, a.offset)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn consecutive_records_share_one_run_and_singles_keep_their_offsets() {
        let (tx, mut rx) = oneshot::channel();
        let call = call(3, tx);
        let (one, mut one_rx) = oneshot::channel();
        let mut w = Waiters::default();
        w.push_one(one);
        for i in 0..3 {
            w.push_of(&call, i);
        }
        assert_eq!(w.0.len(), 2);
        w.acknowledge(4, 100);
        assert_eq!(one_rx.try_recv().unwrap().unwrap().offset, 100);
        let offsets: Vec<_> = rx
            .try_recv()
            .unwrap()
            .unwrap()
            .iter()
            .map(|a| a.offset)
            .collect();
        assert_eq!(offsets, [101, 102, 103]);
    }

    #[test]
    fn the_first_failure_answers_a_call_and_later_answers_change_nothing() {
        let (tx, mut rx) = oneshot::channel();
        let call = call(2, tx);
        let (mut a, mut b) = (Waiters::default(), Waiters::default());
        a.push_of(&call, 0);
        b.push_of(&call, 1);
        a.fail(&Status::resource_exhausted("full"));
        b.acknowledge(0, 7);
        let err = rx.try_recv().unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }
}
