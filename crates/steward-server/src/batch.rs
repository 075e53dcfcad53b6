//! Group commit: callers hand items to one writer task, which takes
//! everything waiting (up to a maximum) and processes it as one batch (one
//! transaction, one commit), then answers each caller. Used by the audit log
//! and by quota reservations, so a burst of decisions costs one durable
//! commit per batch rather than one per decision.

use std::future::Future;

use steward_core::Error;
use steward_types::ErrorCode;
use tokio::sync::{mpsc, oneshot};

type Pending<I, O> = (I, oneshot::Sender<Result<O, Error>>);

/// The submitting side of a group-commit writer.
pub struct Batcher<I, O> {
    queue: mpsc::Sender<Pending<I, O>>,
    what: &'static str,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Start the writer: `process` gets each batch and returns one output per
    /// item, in order, or an error that fails the whole batch.
    pub fn start<F, Fut>(what: &'static str, max_batch: usize, process: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>, Error>> + Send,
    {
        let (queue, mut rx) = mpsc::channel::<Pending<I, O>>(65_536);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
                match process(items).await {
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
            }
        });
        Batcher { queue, what }
    }

    /// Submit one item; resolves when its batch is committed.
    pub async fn submit(&self, item: I) -> Result<O, Error> {
        self.enqueue(item).await?.wait().await
    }

    /// Queue one item for the next batch without waiting for its commit:
    /// the caller may do other work while it is written, then
    /// [`Receipt::wait`] for it.
    pub async fn enqueue(&self, item: I) -> Result<Receipt<O>, Error> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((item, tx))
            .await
            .map_err(|_| stopped(self.what))?;
        Ok(Receipt {
            reply: rx,
            what: self.what,
        })
    }
}

/// An item queued by [`Batcher::enqueue`], not yet known to be committed.
pub struct Receipt<O> {
    reply: oneshot::Receiver<Result<O, Error>>,
    what: &'static str,
}

impl<O> Receipt<O> {
    /// Resolves when the item's batch is committed.
    pub async fn wait(self) -> Result<O, Error> {
        self.reply.await.map_err(|_| stopped(self.what))?
    }
}

fn stopped(what: &str) -> Error {
    Error::new(
        ErrorCode::StoreUnavailable,
        format!("the {what} writer has stopped; nothing was changed"),
    )
}
