//! Group commit: callers queue items, and whoever waits for one while no
//! batch is being written writes everything waiting (up to a maximum) as
//! one batch (one transaction, one commit), then answers each caller. Used
//! by the audit log and by quota reservations, so a burst of decisions
//! costs one durable commit per batch rather than one per decision.
//!
//! The batch is written on the waiting caller's own task, not handed to a
//! writer task and back: on two cores every hand-off between threads is a
//! chance to wait for one, and the decision path's latency is mostly such
//! waits. Items queued while a batch is written are written next, by a
//! task started for them. A writing caller that goes away (its client hung
//! up) leaves the batch to finish on a task of its own, so no item queued
//! is dropped half-written.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use steward_core::Error;
use steward_types::ErrorCode;
use tokio::sync::oneshot;

type Pending<I, O> = (I, oneshot::Sender<Result<O, Error>>);
type Process<I, O> =
    dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = Result<Vec<O>, Error>> + Send>> + Send + Sync;

/// Most items a writer may hold queued: past this, callers are refused
/// rather than queued without bound.
const MAX_QUEUED: usize = 65_536;

/// The submitting side of a group-commit writer.
pub struct Batcher<I, O> {
    shared: Arc<Shared<I, O>>,
}

struct Shared<I, O> {
    what: &'static str,
    max_batch: usize,
    process: Box<Process<I, O>>,
    state: Mutex<Queue<I, O>>,
}

struct Queue<I, O> {
    waiting: VecDeque<Pending<I, O>>,
    /// A batch is being written (and whoever writes it will see to what
    /// is queued meanwhile).
    writing: bool,
}

impl<I: Send + 'static, O: Send + 'static> Shared<I, O> {
    fn state(&self) -> MutexGuard<'_, Queue<I, O>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the caller should write: items are queued and nobody is
    /// writing them (the caller now is).
    fn take_turn(&self) -> bool {
        let mut state = self.state();
        if state.writing || state.waiting.is_empty() {
            return false;
        }
        state.writing = true;
        true
    }
}

/// Write one batch of what is queued, answer its callers, then leave what
/// was queued meanwhile to a task of its own (or stop writing).
async fn write_one<I: Send + 'static, O: Send + 'static>(shared: Arc<Shared<I, O>>) {
    let mut turn = Turn {
        shared: shared.clone(),
        passed: false,
    };
    let batch: Vec<Pending<I, O>> = {
        let mut state = shared.state();
        let n = state.waiting.len().min(shared.max_batch);
        state.waiting.drain(..n).collect()
    };
    let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
    let what = shared.what;
    // A panic in `process` fails this batch alone: it does not unwind the
    // task that happens to be writing (maybe a caller not in the batch).
    let written = match catch_unwind(AssertUnwindSafe(|| (shared.process)(items))) {
        Ok(work) => CatchUnwind(work).await,
        Err(panic) => Err(panic),
    };
    let written =
        written.unwrap_or_else(|_| Err(Error::internal(format!("the {what} writer panicked"))));
    match written {
        Ok(outs) if outs.len() == replies.len() => {
            for (reply, out) in replies.into_iter().zip(outs) {
                let _ = reply.send(Ok(out));
            }
        }
        Ok(_) => {
            let e = Error::internal(format!("the {what} writer lost track of a batch"));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "{what} batch failed; its callers fail closed");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
    turn.pass();
}

/// A future whose panic is its output rather than its poller's.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut self.0).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// The writer's turn: passed on when its batch is answered, or (should the
/// write panic) given up so that writing goes on.
struct Turn<I: Send + 'static, O: Send + 'static> {
    shared: Arc<Shared<I, O>>,
    passed: bool,
}

impl<I: Send + 'static, O: Send + 'static> Turn<I, O> {
    /// What was queued meanwhile is written by a task of its own, so this
    /// caller gets its answer now.
    fn pass(&mut self) {
        self.passed = true;
        let mut state = self.shared.state();
        if state.waiting.is_empty() {
            state.writing = false;
            return;
        }
        drop(state);
        spawn_writer(self.shared.clone());
    }
}

impl<I: Send + 'static, O: Send + 'static> Drop for Turn<I, O> {
    fn drop(&mut self) {
        if !self.passed {
            self.shared.state().writing = false;
            if self.shared.take_turn() {
                spawn_writer(self.shared.clone());
            }
        }
    }
}

/// Go on writing on a task of its own (outside a runtime, at shutdown,
/// there is nothing left to write with: the queued callers fail closed).
fn spawn_writer<I: Send + 'static, O: Send + 'static>(shared: Arc<Shared<I, O>>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let mut unfinished = Unfinished(Some(shared.clone()));
            runtime.spawn(async move {
                write_one(shared).await;
                unfinished.finished();
            });
        }
        Err(_) => Unfinished(Some(shared)).give_up(),
    }
}

/// A writer task that may be dropped unfinished (its runtime shutting
/// down): then nothing is left to write with, and the queued callers fail
/// closed rather than wait for a writer that will not come.
struct Unfinished<I: Send + 'static, O: Send + 'static>(Option<Arc<Shared<I, O>>>);

impl<I: Send + 'static, O: Send + 'static> Unfinished<I, O> {
    fn finished(&mut self) {
        self.0 = None;
    }

    fn give_up(&mut self) {
        if let Some(shared) = self.0.take() {
            let mut state = shared.state();
            state.writing = false;
            state.waiting.clear();
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Drop for Unfinished<I, O> {
    fn drop(&mut self) {
        self.give_up();
    }
}

/// A write that finishes even if its caller goes away: dropped before it
/// is done, it goes on on a task of its own.
struct Finish(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Future for Finish {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(work) = self.0.as_mut() else {
            return Poll::Ready(());
        };
        match catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                self.0 = None;
                Poll::Ready(())
            }
            // Never resumed: its turn was given up as it unwound.
            Err(panic) => {
                self.0 = None;
                resume_unwind(panic)
            }
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        // Dropped mid-write (its caller went away, or something else in
        // the caller's task panicked): the write goes on.
        if let Some(work) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(work);
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// A writer: `process` gets each batch and returns one output per item,
    /// in order, or an error that fails the whole batch.
    pub fn start<F, Fut>(what: &'static str, max_batch: usize, process: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, Error>> + Send + 'static,
    {
        Batcher {
            shared: Arc::new(Shared {
                what,
                max_batch: max_batch.max(1),
                process: Box::new(move |items| Box::pin(process(items))),
                state: Mutex::new(Queue {
                    waiting: VecDeque::new(),
                    writing: false,
                }),
            }),
        }
    }

    /// Submit one item; resolves when its batch is committed.
    pub async fn submit(&self, item: I) -> Result<O, Error> {
        self.enqueue(item).await?.wait().await
    }

    /// Queue one item for the next batch without waiting for its commit:
    /// the caller may do other work meanwhile, then [`Receipt::wait`] for
    /// it (the batch is written then, if nobody has started it).
    pub async fn enqueue(&self, item: I) -> Result<Receipt<I, O>, Error> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.state();
            if state.waiting.len() >= MAX_QUEUED {
                return Err(Error::new(
                    ErrorCode::StoreUnavailable,
                    format!(
                        "the {} writer has {MAX_QUEUED} items waiting; nothing was changed",
                        self.shared.what
                    ),
                ));
            }
            state.waiting.push_back((item, tx));
        }
        Ok(Receipt {
            shared: Some(self.shared.clone()),
            reply: rx,
            what: self.shared.what,
        })
    }
}

/// An item queued by [`Batcher::enqueue`], not yet known to be committed.
/// Dropped without [`Receipt::wait`], its item is still written.
pub struct Receipt<I: Send + 'static, O: Send + 'static> {
    shared: Option<Arc<Shared<I, O>>>,
    reply: oneshot::Receiver<Result<O, Error>>,
    what: &'static str,
}

impl<I: Send + 'static, O: Send + 'static> Receipt<I, O> {
    /// Resolves when the item's batch is committed: written by this caller
    /// if nobody is writing.
    pub async fn wait(mut self) -> Result<O, Error> {
        // Already written by someone else's turn: no need to write theirs.
        match self.reply.try_recv() {
            Ok(out) => return out,
            Err(oneshot::error::TryRecvError::Closed) => return Err(stopped(self.what)),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        if let Some(shared) = self.shared.take()
            && shared.take_turn()
        {
            Finish(Some(Box::pin(write_one(shared)))).await;
        }
        (&mut self.reply).await.map_err(|_| stopped(self.what))?
    }
}

impl<I: Send + 'static, O: Send + 'static> Receipt<I, O> {
    /// As [`Receipt::wait`], but first give whoever writes before `linger`
    /// resolves the chance to take this item along in their batch: for an
    /// item nobody is waiting on (its caller has had its answer), which
    /// then costs no commit of its own and does not hold up the next
    /// caller's.
    pub async fn wait_lingering(mut self, linger: impl Future<Output = ()>) -> Result<O, Error> {
        tokio::select! {
            out = &mut self.reply => out.map_err(|_| stopped(self.what))?,
            () = linger => self.wait().await,
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Drop for Receipt<I, O> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take()
            && shared.take_turn()
        {
            spawn_writer(shared);
        }
    }
}

fn stopped(what: &str) -> Error {
    Error::new(
        ErrorCode::StoreUnavailable,
        format!("the {what} writer has stopped; nothing was changed"),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// A writer that doubles each item and notes every batch it writes,
    /// holding each batch until `gate` lets it through (when given).
    fn doubler(written: Arc<Mutex<Vec<Vec<u32>>>>, gate: Option<Arc<Notify>>) -> Batcher<u32, u32> {
        Batcher::start("test", 4, move |items: Vec<u32>| {
            let (written, gate) = (written.clone(), gate.clone());
            async move {
                if let Some(gate) = gate {
                    gate.notified().await;
                }
                if items.contains(&1000) {
                    panic!("an unlucky batch");
                }
                written.lock().unwrap().push(items.clone());
                Ok(items.iter().map(|i| i * 2).collect())
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_gets_its_own_answer_and_batches_stay_within_the_maximum() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(doubler(written.clone(), None));
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(i).await.unwrap()) })
            })
            .collect();
        for t in tasks {
            let (i, out) = t.await.unwrap();
            assert_eq!(out, i * 2);
        }
        let batches = written.lock().unwrap().clone();
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 4));
        let mut all: Vec<u32> = batches.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<_>>(), "each item written once");
    }

    #[tokio::test]
    async fn an_item_whose_receipt_is_dropped_is_still_written() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let batcher = doubler(written.clone(), None);
        drop(batcher.enqueue(7).await.unwrap());
        // The next caller finds the first item written or being written.
        assert_eq!(batcher.submit(8).await.unwrap(), 16);
        tokio::task::yield_now().await;
        let all: Vec<u32> = written.lock().unwrap().iter().flatten().copied().collect();
        assert!(all.contains(&7) && all.contains(&8), "{all:?}");
    }

    #[tokio::test]
    async fn a_writer_that_goes_away_leaves_its_batch_to_finish() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Notify::new());
        let batcher = Arc::new(doubler(written.clone(), Some(gate.clone())));
        let first = batcher.enqueue(1).await.unwrap();
        let second = batcher.enqueue(2).await.unwrap();
        // The first caller starts writing both, then goes away mid-write.
        let writer = tokio::spawn(first.wait());
        while !batcher.shared.state().writing {
            tokio::task::yield_now().await;
        }
        writer.abort();
        assert!(writer.await.unwrap_err().is_cancelled());
        gate.notify_one();
        assert_eq!(second.wait().await.unwrap(), 4);
        assert_eq!(*written.lock().unwrap(), vec![vec![1, 2]]);
    }

    #[tokio::test]
    async fn a_panic_beside_the_writer_leaves_its_batch_to_finish() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Notify::new());
        let batcher = doubler(written.clone(), Some(gate.clone()));
        let other = batcher.enqueue(2).await.unwrap();
        let mine = batcher.enqueue(1).await.unwrap();
        // As the gateway waits for a record beside its call upstream, and
        // the call panics while this caller writes both items.
        let caller = tokio::spawn(async move {
            let beside = async {
                tokio::task::yield_now().await;
                panic!("beside the write");
            };
            tokio::join!(beside, mine.wait());
        });
        assert!(caller.await.unwrap_err().is_panic());
        gate.notify_one();
        assert_eq!(other.wait().await.unwrap(), 4);
        assert_eq!(*written.lock().unwrap(), vec![vec![2, 1]]);
    }

    #[test]
    fn a_runtime_shut_down_mid_write_leaves_no_writer_stuck() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Notify::new());
        let batcher = Arc::new(doubler(written.clone(), Some(gate.clone())));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let b = batcher.clone();
        let queued = runtime.block_on(async move {
            let first = b.enqueue(1).await.unwrap();
            tokio::spawn(first.wait());
            while !b.shared.state().writing {
                tokio::task::yield_now().await;
            }
            b.enqueue(2).await.unwrap()
        });
        drop(runtime);
        assert!(!batcher.shared.state().writing);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // The item queued then failed closed; a new one is written.
        assert!(runtime.block_on(queued.wait()).is_err());
        gate.notify_one();
        assert_eq!(runtime.block_on(batcher.submit(3)).unwrap(), 6);
        assert_eq!(*written.lock().unwrap(), vec![vec![3]]);
    }

    #[tokio::test]
    async fn a_lingering_item_rides_with_the_next_batch_or_is_written_alone() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(doubler(written.clone(), None));
        let lingering = batcher.enqueue(1).await.unwrap();
        // Lingering longer than any test could take: the next batch takes it.
        let waiting =
            tokio::spawn(lingering.wait_lingering(tokio::time::sleep(Duration::from_secs(3600))));
        tokio::task::yield_now().await;
        assert_eq!(batcher.submit(2).await.unwrap(), 4);
        assert_eq!(waiting.await.unwrap().unwrap(), 2);
        // Nobody else wrote: written alone once the linger is over.
        let alone = batcher.enqueue(3).await.unwrap();
        assert_eq!(
            alone
                .wait_lingering(tokio::time::sleep(Duration::from_millis(1)))
                .await
                .unwrap(),
            6
        );
        assert_eq!(*written.lock().unwrap(), vec![vec![1, 2], vec![3]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_fails_its_batch_alone() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(doubler(written.clone(), None));
        let b = batcher.clone();
        let unlucky = tokio::spawn(async move { b.submit(1000).await }).await;
        // The writer's panic is its batch's error, not its caller's crash.
        let e = unlucky.expect("the caller's task survives").unwrap_err();
        assert!(e.message.contains("panicked"), "{e:?}");
        assert!(!batcher.shared.state().writing, "the turn was given up");
        assert_eq!(batcher.submit(5).await.unwrap(), 10);
    }
}
