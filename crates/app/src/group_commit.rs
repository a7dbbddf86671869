//! Group commit: work that arrives together shares one transaction.
//!
//! Each caller puts its item in a queue and waits. Runner tasks take everything waiting (at most
//! [`GroupCommit::max_batch`] items) and process it together, answering every caller once the
//! shared transaction has committed (or failed). A caller is answered only after its item is
//! durable, so nothing is acknowledged early.
//!
//! Nothing waits for a batch to fill: an item that finds no runner starts one and is processed
//! at once (a batch of one), and batches grow only while runners are busy, that is, under load.
//! How many runners run at once is the setting's choice:
//! - **eager** (`spare_runner_after` zero, the webhook ingest): an item that finds fewer than
//!   [`GroupCommit::runners`] runners starts another, so up to that many batches run at once;
//! - **guarded** (`spare_runner_after` above zero, the record of reads): one runner takes batch
//!   after batch, so batches are as large as the load makes them (fewer, larger transactions
//!   cost less per item). A caller whose answer has not come after `spare_runner_after` (the
//!   runner is stalled: a slow commit, a lock wait, a connection that hangs) starts a *spare*
//!   runner, up to `runners` in all, which takes one batch of what waits and ends. A stall
//!   delays the items behind it by at most about `spare_runner_after`, not by the whole stall.
//!
//! The queue holds only items whose callers are waiting; the process stays stateless. With
//! `max_batch = 1` every item has a transaction of its own.
//!
//! A runner is a task of its own: a caller that goes away (a client hanging up drops its call)
//! does not cancel a transaction other callers share; its item is still processed.
//!
//! Used by the webhook ingest (`webhook_ingest::batch`) and by the record of reads
//! (`access_log`); what a batch means is theirs, the queue and its runners are this module's.

use crate::{Error, Result};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

/// How items share transactions (`webhooks.group_commit`, `audit.read_group_commit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// Most items in one shared transaction: bounds how much one rollback costs.
    pub max_batch: usize,
    /// Most batches processed at once, each holding one database connection.
    pub runners: usize,
    /// Zero: runners start eagerly, up to `runners`. Above zero: one runner, and a spare one
    /// (up to `runners` in all) only for items that waited this long (see the module docs).
    pub spare_runner_after: Duration,
}

impl GroupCommit {
    /// Bounds of the settings (what configuration accepts).
    pub const MAX_BATCH_LIMIT: usize = 256;
    pub const RUNNERS_LIMIT: usize = 64;
    /// Bounds of `spare_runner_after`, in milliseconds (what configuration accepts).
    pub const SPARE_RUNNER_AFTER_MS_LIMIT: u64 = 10_000;
}

impl GroupCommit {
    /// The default for reads' audit entries (`audit.read_group_commit`): one runner, and a
    /// spare for reads that waited 50 ms, up to 2 at once. One runner makes larger batches: in
    /// the `patient_read` bench of 2026-12-06 a read cost 12 to 22 % less CPU than with 2 eager
    /// runners (docs/architecture.md, "Reads are recorded by group commit"). Under that bench's
    /// load a read waits 11 to 13 ms at p99, so 50 ms means "stalled", not "busy"; with 10 ms,
    /// spares started under plain load too.
    pub const READS: GroupCommit =
        GroupCommit { max_batch: 64, runners: 2, spare_runner_after: Duration::from_millis(50) };
}

impl Default for GroupCommit {
    /// See docs/architecture.md ("Group commit for webhooks") for the measurements behind these:
    /// 4 eager runners beat 2 by 5 to 7 % in both bench runs of 2026-12-05 (8 were no better
    /// than 4).
    fn default() -> Self {
        Self { max_batch: 64, runners: 4, spare_runner_after: Duration::ZERO }
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
    /// Runners that take batch after batch until nothing waits, started and not yet finished.
    runners: usize,
    /// Spare runners (guarded mode), each taking one batch, started and not yet finished.
    spares: usize,
}

/// What a runner does: batch after batch until the queue is empty, or one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunnerKind {
    Looping,
    Spare,
}

impl<I, O> std::fmt::Debug for GroupCommitQueue<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitQueue").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl<I: Send + 'static, O: Send + 'static> GroupCommitQueue<I, O> {
    pub fn new(settings: GroupCommit) -> Self {
        let settings =
            GroupCommit { max_batch: settings.max_batch.max(1), runners: settings.runners.max(1), ..settings };
        Self { settings, queue: Mutex::new(Queue { waiting: Vec::new(), runners: 0, spares: 0 }) }
    }

    fn queue(&self) -> MutexGuard<'_, Queue<I, O>> {
        // Nothing panics while holding the lock; a poisoned queue is still a consistent one.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn guarded(&self) -> bool {
        !self.settings.spare_runner_after.is_zero()
    }

    /// Runners of both kinds started and not yet finished (0 once the queue has been emptied).
    #[cfg(test)]
    pub fn runners(&self) -> usize {
        let queue = self.queue();
        queue.runners + queue.spares
    }

    /// Queues `item` and returns its answer once a runner has processed it. A runner is started
    /// (see the module docs for when) with the processor `start_runner` makes: it is called with
    /// each batch and must answer every item of it. `stopped` is the detail of the
    /// [`Error::Unavailable`] a caller gets when its item was never answered (the process
    /// stopping under it).
    pub async fn submit<P, F>(self: &Arc<Self>, item: I, start_runner: impl Fn() -> P, stopped: &str) -> Result<O>
    where
        P: FnMut(Vec<Waiting<I, O>>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (reply, mut answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue();
            queue.waiting.push(Waiting { item, reply });
            let limit = if self.guarded() { 1 } else { self.settings.runners };
            let free = queue.runners < limit;
            if free {
                queue.runners += 1;
            }
            free
        };
        if start {
            self.spawn(RunnerKind::Looping, start_runner());
        }
        if self.guarded() {
            // Each time the answer is late, one spare runner for whatever waits meanwhile.
            loop {
                match tokio::time::timeout(self.settings.spare_runner_after, &mut answer).await {
                    Ok(answered) => return answered.map_err(|_| Error::Unavailable(stopped.to_owned()))?,
                    Err(_late) => {
                        if self.claim_spare() {
                            self.spawn(RunnerKind::Spare, start_runner());
                        }
                    }
                }
            }
        }
        answer.await.map_err(|_| Error::Unavailable(stopped.to_owned()))?
    }

    /// Counts a spare runner in when items wait and fewer than the limit of runners run.
    fn claim_spare(&self) -> bool {
        let mut queue = self.queue();
        let free = !queue.waiting.is_empty() && queue.runners + queue.spares < self.settings.runners;
        if free {
            queue.spares += 1;
        }
        free
    }

    /// Starts a runner already counted in.
    fn spawn<P, F>(self: &Arc<Self>, kind: RunnerKind, process: P)
    where
        P: FnMut(Vec<Waiting<I, O>>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        // The slot exists before the task does: a task dropped before it first runs still
        // counts itself out.
        let slot = RunnerSlot { queue: self.clone(), kind, counted: true };
        tokio::spawn(run(slot, process));
    }

    /// Up to [`GroupCommit::max_batch`] waiting items, oldest first; `None` when none wait, in
    /// which case a looping runner is counted out in the same critical section (so an item
    /// queued just after always finds a runner, or starts one).
    fn next_batch(&self, kind: RunnerKind) -> Option<Vec<Waiting<I, O>>> {
        let mut queue = self.queue();
        if queue.waiting.is_empty() {
            if kind == RunnerKind::Looping {
                queue.runners -= 1;
            }
            return None;
        }
        let take = queue.waiting.len().min(self.settings.max_batch);
        Some(queue.waiting.drain(..take).collect())
    }
}

/// Counts a runner out when it ends, unless `next_batch` already did. When it was the last
/// runner (its task panicked, or was dropped with the runtime it ran on: a worker stopping), the
/// items still waiting are answered with an error rather than left waiting for a runner that may
/// never come. (While items wait, a looping runner runs: the last runner ending normally finds
/// nothing waiting.)
struct RunnerSlot<I, O> {
    queue: Arc<GroupCommitQueue<I, O>>,
    kind: RunnerKind,
    counted: bool,
}

impl<I, O> Drop for RunnerSlot<I, O> {
    fn drop(&mut self) {
        let stranded = {
            let mut queue = self.queue.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if self.counted {
                match self.kind {
                    RunnerKind::Looping => queue.runners -= 1,
                    RunnerKind::Spare => queue.spares -= 1,
                }
            }
            if queue.runners + queue.spares == 0 { std::mem::take(&mut queue.waiting) } else { Vec::new() }
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
        let Some(batch) = queue.next_batch(slot.kind) else {
            // A looping runner was counted out by next_batch; a spare counts itself out below.
            slot.counted = slot.kind == RunnerKind::Spare;
            return;
        };
        process(batch).await;
        if slot.kind == RunnerKind::Spare {
            return;
        }
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
        let queue = Arc::new(GroupCommitQueue::new(GroupCommit {
            max_batch: 8,
            runners: 2,
            spare_runner_after: Duration::ZERO,
        }));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let calls = (0..200u32).map(|i| {
            let (queue, sizes) = (queue.clone(), sizes.clone());
            async move { queue.submit(i, move || doubler(sizes.clone()), "stopped").await }
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

    /// A processor that answers every item with itself after `hold`, unless the batch holds
    /// `stall_on`, which it answers only once `release` is notified; it counts the batches in
    /// progress at once (the most seen goes to `most_at_once`) and records batch sizes.
    #[derive(Clone, Default)]
    struct Observed {
        in_progress: Arc<std::sync::atomic::AtomicUsize>,
        most_at_once: Arc<std::sync::atomic::AtomicUsize>,
        sizes: Arc<Mutex<Vec<usize>>>,
        release: Arc<tokio::sync::Notify>,
    }

    type BoxedBatch = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

    impl Observed {
        fn processor(
            &self,
            hold: Duration,
            stall_on: Option<u32>,
        ) -> impl FnMut(Vec<Waiting<u32, u32>>) -> BoxedBatch + Send + 'static {
            use std::sync::atomic::Ordering::SeqCst;
            let observed = self.clone();
            move |batch| {
                let observed = observed.clone();
                Box::pin(async move {
                    let now = observed.in_progress.fetch_add(1, SeqCst) + 1;
                    observed.most_at_once.fetch_max(now, SeqCst);
                    observed.sizes.lock().unwrap().push(batch.len());
                    if stall_on.is_some_and(|stalling| batch.iter().any(|w| w.item == stalling)) {
                        observed.release.notified().await;
                    } else {
                        tokio::time::sleep(hold).await;
                    }
                    observed.in_progress.fetch_sub(1, SeqCst);
                    for waiting in batch {
                        let _ = waiting.reply.send(Ok(waiting.item));
                    }
                })
            }
        }
    }

    /// A runner counts itself out just after answering its last batch: wait for that.
    async fn all_runners_end(queue: &GroupCommitQueue<u32, u32>) {
        for _ in 0..1000 {
            if queue.runners() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{} runners still counted once every item was answered", queue.runners());
    }

    /// Submits `i` on a task of its own, with a processor that stalls on item 0 (see [`Observed`]).
    fn submit_stalling_on_zero(
        queue: &Arc<GroupCommitQueue<u32, u32>>,
        observed: &Observed,
        i: u32,
    ) -> tokio::task::JoinHandle<Result<u32>> {
        let (queue, observed) = (queue.clone(), observed.clone());
        tokio::spawn(async move {
            queue.submit(i, || observed.processor(Duration::from_millis(1), Some(0)), "stopped").await
        })
    }

    /// Submits item 0 and returns once its batch is in progress (stalled until released).
    async fn stall_on_zero(
        queue: &Arc<GroupCommitQueue<u32, u32>>,
        observed: &Observed,
    ) -> tokio::task::JoinHandle<Result<u32>> {
        let stalled = submit_stalling_on_zero(queue, observed, 0);
        while observed.in_progress.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stalled
    }

    fn guarded(runners: usize, spare_runner_after: Duration) -> Arc<GroupCommitQueue<u32, u32>> {
        Arc::new(GroupCommitQueue::new(GroupCommit { max_batch: 64, runners, spare_runner_after }))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guarded_one_runner_takes_everything_that_waits_while_it_works() {
        // Batches take 2 ms and nothing is late enough for a spare: one runner, large batches.
        let queue = guarded(4, Duration::from_secs(5));
        let observed = Observed::default();
        let calls = (0..300u32).map(|i| {
            let (queue, observed) = (queue.clone(), observed.clone());
            async move { queue.submit(i, || observed.processor(Duration::from_millis(2), None), "stopped").await }
        });
        let answers = futures_util::future::join_all(calls).await;
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), u32::try_from(i).unwrap());
        }
        assert_eq!(observed.most_at_once.load(std::sync::atomic::Ordering::SeqCst), 1, "one runner at a time");
        let sizes = observed.sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 300);
        assert!(sizes.len() < 300, "items shared batches: {sizes:?}");
        all_runners_end(&queue).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_runner_does_not_hold_the_items_behind_it_and_spares_stay_within_the_limit() {
        let queue = guarded(2, Duration::from_millis(20));
        let observed = Observed::default();
        let submit = |i: u32| submit_stalling_on_zero(&queue, &observed, i);
        // Item 0's batch stalls until released.
        let stalled = stall_on_zero(&queue, &observed).await;
        // The items behind it are answered by spares while it still stalls.
        let behind: Vec<_> = (1..=20).map(submit).collect();
        for (i, call) in behind.into_iter().enumerate() {
            let answer = tokio::time::timeout(Duration::from_secs(5), call).await.expect("answered during the stall");
            assert_eq!(answer.unwrap().unwrap(), u32::try_from(i + 1).unwrap());
        }
        assert!(!stalled.is_finished(), "item 0 is still stalled");
        assert_eq!(observed.most_at_once.load(std::sync::atomic::Ordering::SeqCst), 2, "never more than 2 runners");
        observed.release.notify_one();
        assert_eq!(stalled.await.unwrap().unwrap(), 0);
        all_runners_end(&queue).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn when_every_runner_stalls_items_wait_for_one_rather_than_start_more() {
        let queue = guarded(1, Duration::from_millis(5));
        let observed = Observed::default();
        let submit = |i: u32| submit_stalling_on_zero(&queue, &observed, i);
        let stalled = stall_on_zero(&queue, &observed).await;
        let behind = submit(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!behind.is_finished(), "with runners = 1 no spare starts");
        assert_eq!(observed.most_at_once.load(std::sync::atomic::Ordering::SeqCst), 1);
        observed.release.notify_one();
        assert_eq!(stalled.await.unwrap().unwrap(), 0);
        assert_eq!(behind.await.unwrap().unwrap(), 1);
        all_runners_end(&queue).await;
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
