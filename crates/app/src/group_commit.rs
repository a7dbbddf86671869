//! Group commit: work that arrives together shares one transaction.
//!
//! Each caller puts its item in a queue and waits. Up to [`GroupCommit::runners`] runner tasks
//! take everything waiting (at most [`GroupCommit::max_batch`] items) and process it together,
//! answering every caller once the shared transaction has committed (or failed). A caller is
//! answered only after its item is durable, so nothing is acknowledged early.
//!
//! Nothing waits for a batch to fill: an item that finds a runner free is processed at once (a
//! batch of one), and batches grow only while the runners are busy, that is, under load. The
//! queue holds only items whose callers are waiting; the process stays stateless. With
//! `max_batch = 1` every item has a transaction of its own (at most `runners` at once).
//!
//! A runner is a task of its own: a caller that goes away (a client hanging up drops its call)
//! does not cancel a transaction other callers share; its item is still processed.
//!
//! Used by the webhook ingest (`webhook_ingest::batch`) and by the record of reads
//! (`access_log`); what a batch means is theirs, the queue and its runners are this module's.

use crate::{Error, Result};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

/// How items share transactions (`webhooks.group_commit`, `audit.read_group_commit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// Most items in one shared transaction: bounds how much one rollback costs.
    pub max_batch: usize,
    /// Most batches processed at once, each holding one database connection.
    pub runners: usize,
}

impl GroupCommit {
    /// Bounds of the settings (what configuration accepts).
    pub const MAX_BATCH_LIMIT: usize = 256;
    pub const RUNNERS_LIMIT: usize = 64;
}

impl GroupCommit {
    /// The default for reads' audit entries (`audit.read_group_commit`): 2 runners. Fewer
    /// runners make larger batches; in the `patient_read` bench of 2026-12-06 a read cost 2 to
    /// 15 % less CPU with 2 runners than with 4, and about 19 % less with 1 (one runner would
    /// leave every read waiting behind one stalled commit, so 2).
    pub const READS: GroupCommit = GroupCommit { max_batch: 64, runners: 2 };
}

impl Default for GroupCommit {
    /// See docs/architecture.md ("Group commit for webhooks") for the measurements behind these:
    /// 4 runners beat 2 by 5 to 7 % in both bench runs of 2026-12-05 (8 were no better than 4).
    fn default() -> Self {
        Self { max_batch: 64, runners: 4 }
    }
}

/// An item and where its answer goes. Dropping `reply` unanswered answers the caller with
/// [`Error::Unavailable`].
pub(crate) struct Waiting<I, O> {
    pub item: I,
    pub reply: oneshot::Sender<Result<O>>,
}

/// The queue of items waiting for a shared transaction.
pub(crate) struct GroupCommitQueue<I, O> {
    settings: GroupCommit,
    queue: Mutex<Queue<I, O>>,
}

struct Queue<I, O> {
    waiting: Vec<Waiting<I, O>>,
    /// Runners started and not yet finished.
    runners: usize,
}

impl<I, O> std::fmt::Debug for GroupCommitQueue<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitQueue").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl<I: Send + 'static, O: Send + 'static> GroupCommitQueue<I, O> {
    pub fn new(settings: GroupCommit) -> Self {
        let settings = GroupCommit { max_batch: settings.max_batch.max(1), runners: settings.runners.max(1) };
        Self { settings, queue: Mutex::new(Queue { waiting: Vec::new(), runners: 0 }) }
    }

    fn queue(&self) -> MutexGuard<'_, Queue<I, O>> {
        // Nothing panics while holding the lock; a poisoned queue is still a consistent one.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runners started and not yet finished (0 once the queue has been emptied).
    #[cfg(test)]
    pub fn runners(&self) -> usize {
        self.queue().runners
    }

    /// Queues `item` and returns its answer once a runner has processed it. When no runner is
    /// free and fewer than the limit run, one is started with the processor `start_runner`
    /// makes: it is called with each batch and must answer every item of it. `stopped` is the
    /// detail of the [`Error::Unavailable`] a caller gets when its item was never answered (the
    /// process stopping under it).
    pub async fn submit<P, F>(self: &Arc<Self>, item: I, start_runner: impl FnOnce() -> P, stopped: &str) -> Result<O>
    where
        P: FnMut(Vec<Waiting<I, O>>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue();
            queue.waiting.push(Waiting { item, reply });
            let free = queue.runners < self.settings.runners;
            if free {
                queue.runners += 1;
            }
            free
        };
        if start {
            // The slot exists before the task does: a task dropped before it first runs still
            // counts itself out.
            let slot = RunnerSlot { queue: self.clone(), counted: true };
            tokio::spawn(run(slot, start_runner()));
        }
        answer.await.map_err(|_| Error::Unavailable(stopped.to_owned()))?
    }

    /// Up to [`GroupCommit::max_batch`] waiting items, oldest first; `None` when none wait, in
    /// which case the calling runner is counted out in the same critical section (so an item
    /// queued just after always finds a runner, or starts one).
    fn next_batch(&self) -> Option<Vec<Waiting<I, O>>> {
        let mut queue = self.queue();
        if queue.waiting.is_empty() {
            queue.runners -= 1;
            return None;
        }
        let take = queue.waiting.len().min(self.settings.max_batch);
        Some(queue.waiting.drain(..take).collect())
    }
}

/// Counts a runner out if it ends without emptying the queue: its task panicked, or was dropped
/// with the runtime it ran on (a worker stopping). When it was the last runner, the items still
/// waiting are answered with an error rather than left waiting for a runner that may never come.
struct RunnerSlot<I, O> {
    queue: Arc<GroupCommitQueue<I, O>>,
    counted: bool,
}

impl<I, O> Drop for RunnerSlot<I, O> {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let stranded = {
            let mut queue = self.queue.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.runners -= 1;
            if queue.runners == 0 { std::mem::take(&mut queue.waiting) } else { Vec::new() }
        };
        // Dropping an item's reply sender answers its caller with `Error::Unavailable`.
        drop(stranded);
    }
}

async fn run<I, O, P, F>(mut slot: RunnerSlot<I, O>, mut process: P)
where
    I: Send + 'static,
    O: Send + 'static,
    P: FnMut(Vec<Waiting<I, O>>) -> F,
    F: Future<Output = ()>,
{
    let queue = slot.queue.clone();
    loop {
        let Some(batch) = queue.next_batch() else {
            slot.counted = false; // counted out by next_batch
            return;
        };
        process(batch).await;
    }
}

/// Answers every caller with a failure: the first with `error`, the others with
/// [`Error::Unavailable`] saying `retry`, or what `error` says when it is unavailable too.
pub(crate) fn answer_all<O>(replies: impl IntoIterator<Item = oneshot::Sender<Result<O>>>, error: Error, retry: &str) {
    let detail = match &error {
        Error::Unavailable(detail) => detail.clone(),
        _ => retry.to_owned(),
    };
    let mut first = Some(error);
    for reply in replies {
        let error = first.take().unwrap_or_else(|| Error::Unavailable(detail.clone()));
        // A caller that is gone (the client hung up) has nobody to answer.
        let _ = reply.send(Err(error));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Doubles numbers, recording the size of each batch it was given.
    fn doubler(sizes: Arc<Mutex<Vec<usize>>>) -> impl FnMut(Vec<Waiting<u32, u32>>) -> std::future::Ready<()> {
        move |batch| {
            sizes.lock().unwrap().push(batch.len());
            for waiting in batch {
                let _ = waiting.reply.send(Ok(waiting.item * 2));
            }
            std::future::ready(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_is_answered_in_batches_no_larger_than_allowed_and_runners_end() {
        let queue = Arc::new(GroupCommitQueue::new(GroupCommit { max_batch: 8, runners: 2 }));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let calls = (0..200u32).map(|i| {
            let (queue, sizes) = (queue.clone(), sizes.clone());
            async move { queue.submit(i, move || doubler(sizes), "stopped").await }
        });
        let answers = futures_util::future::join_all(calls).await;
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), 2 * u32::try_from(i).unwrap());
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(sizes.iter().all(|&size| (1..=8).contains(&size)), "{sizes:?}");
        assert_eq!(queue.runners(), 0, "every runner is counted out once the queue is empty");
    }

    #[tokio::test]
    async fn an_item_left_unanswered_is_unavailable_not_lost() {
        let queue = Arc::new(GroupCommitQueue::<u32, u32>::new(GroupCommit::default()));
        let answer = queue
            .submit(
                1,
                || {
                    |batch: Vec<Waiting<u32, u32>>| {
                        drop(batch);
                        std::future::ready(())
                    }
                },
                "the server stopped",
            )
            .await;
        assert!(matches!(answer, Err(Error::Unavailable(ref detail)) if detail == "the server stopped"), "{answer:?}");
        assert_eq!(queue.runners(), 0);
    }

    #[test]
    fn answer_all_gives_the_first_caller_the_error_and_the_others_a_retry() {
        let (first, first_answer) = oneshot::channel::<Result<()>>();
        let (second, second_answer) = oneshot::channel::<Result<()>>();
        answer_all([first, second], Error::internal(anyhow::anyhow!("boom")), "retry later");
        let (mut first_answer, mut second_answer) = (first_answer, second_answer);
        assert!(matches!(first_answer.try_recv().unwrap(), Err(Error::Internal(_))));
        assert!(matches!(second_answer.try_recv().unwrap(), Err(Error::Unavailable(ref d)) if d == "retry later"));
    }
}
