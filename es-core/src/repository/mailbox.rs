//! Per-stream command queues: one worker task per busy stream drains its
//! queue batch by batch, so commands to one stream never race in process.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{batch, CommandContext, CommandOutcome, Decide, Inner, RepositoryError};
use crate::{Aggregate, EventStore, StreamId};

/// A queued command and where to send its answer.
pub(crate) struct Pending<A: Aggregate> {
    pub(crate) decide: Box<dyn Decide<A>>,
    pub(crate) ctx: CommandContext,
    pub(crate) reply: oneshot::Sender<Result<CommandOutcome<A>, RepositoryError<A::Error>>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Queues a command; starts the stream's worker if none is running.
///
/// A stream has a queue entry exactly while its worker runs, so the entry
/// is the worker's "running" flag and is only touched under the lock.
pub(crate) fn enqueue<A: Aggregate, S: EventStore + ?Sized>(
    inner: &Arc<Inner<A, S>>,
    id: StreamId,
    pending: Pending<A>,
) {
    let mut boxes = lock(&inner.mailboxes);
    if let Some(queue) = boxes.get_mut(&id) {
        queue.push_back(pending);
        return;
    }
    boxes.insert(id.clone(), VecDeque::from([pending]));
    drop(boxes);
    tokio::spawn(drain(Arc::clone(inner), id));
}

/// Removes the stream's queue if its worker dies (a panic in user code):
/// the queued commands are dropped and their callers told so.
struct Cleanup<'a, A: Aggregate, S: EventStore + ?Sized> {
    inner: &'a Inner<A, S>,
    id: &'a StreamId,
    armed: bool,
}

impl<A: Aggregate, S: EventStore + ?Sized> Drop for Cleanup<'_, A, S> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.inner.mailboxes).remove(self.id);
        }
    }
}

async fn drain<A: Aggregate, S: EventStore + ?Sized>(inner: Arc<Inner<A, S>>, id: StreamId) {
    let mut cleanup = Cleanup {
        inner: &inner,
        id: &id,
        armed: true,
    };
    let mut hot = None;
    loop {
        let batch: Vec<Pending<A>> = {
            let mut boxes = lock(&inner.mailboxes);
            match boxes.get_mut(&id) {
                Some(queue) if !queue.is_empty() => {
                    let n = queue.len().min(inner.max_batch);
                    queue.drain(..n).collect()
                }
                _ => {
                    boxes.remove(&id);
                    break;
                }
            }
        };
        hot = batch::process(&inner, &id, batch, hot).await;
    }
    cleanup.armed = false;
}
