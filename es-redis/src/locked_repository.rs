//! [`LockedRepository`]: the pessimistic mode for hot streams.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use es_core::{
    Aggregate, CommandContext, CommandOutcome, EventStore, LockError, LockGuard, LockManager, Repository,
    RepositoryError, StreamId,
};

/// The event-metadata header carrying the fencing token of the lock under
/// which the events were decided (es-core's, re-exported).
pub use es_core::FENCING_TOKEN_HEADER;

/// Why a locked command was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockedError<E: std::error::Error + 'static> {
    /// The stream's lock could not be taken (contended through every
    /// attempt, or the lock backend is down). The command did not run.
    #[error("cannot lock stream {stream_id}: {source}")]
    Lock {
        /// The stream.
        stream_id: StreamId,
        /// The lock manager's error.
        #[source]
        source: LockError,
    },
    /// The command ran under the lock and failed.
    #[error(transparent)]
    Repository(RepositoryError<E>),
}

/// A [`Repository`] that takes a per-stream distributed lock around
/// load-decide-append.
///
/// Each command: acquire `"{A::TYPE}:{stream_id}"` (retrying by the lock
/// manager's policy), fence the command with the lease's token
/// ([`CommandContext::with_fencing_token`]: recorded in
/// `metadata.headers["fencing_token"]` of every event), run it through
/// [`Repository::execute_in`], extend the lease every `ttl / 2` while it
/// runs, release.
///
/// The lock is an optimisation, not the correctness guard: the repository
/// still appends with the exact expected version, and refuses a command
/// whose token is older than one already in the stream. A holder that lost
/// its lease (a pause past the TTL, a Redis failover) while a newer holder
/// wrote gets [`RepositoryError::Fenced`] and writes nothing, even after
/// catching up on the version conflict. If the token counter itself was
/// lost (a Redis restarted without persistence), the first command on a
/// stream written before is refused the same way and the counter raised
/// past the stream's token (`LockManager::raise_tokens_past`): the retry
/// goes through.
///
/// **When each mode wins** (measured by `examples/hot_account.rs`; figures
/// in the README): with one or a few processes per stream, es-core's
/// in-process batching already serializes a hot stream with few or no
/// conflicts, and the lock only adds Redis round trips while capping
/// throughput at one critical section at a time — stay optimistic. With
/// many processes writing one hot stream, optimistic writers conflict,
/// re-read and back off (several wasted executions per command); the lock
/// removes the waste and halves the tail. Choose it when re-executions are
/// expensive or undesirable, for streams known to be hot across instances.
///
/// With a [`RedisStateCache`](crate::RedisStateCache) in the wrapped
/// repository, set `l1_enabled: false`: under the lock, Redis holds the
/// previous holder's write-through, while this instance's L1 may be stale
/// (which would cost a conflict and a tail read per hand-over).
pub struct LockedRepository<A: Aggregate, S: EventStore + ?Sized = dyn EventStore> {
    repo: Repository<A, S>,
    locks: Arc<dyn LockManager>,
    ttl: Duration,
}

impl<A: Aggregate, S: EventStore + ?Sized> Clone for LockedRepository<A, S> {
    fn clone(&self) -> Self {
        Self {
            repo: self.repo.clone(),
            locks: Arc::clone(&self.locks),
            ttl: self.ttl,
        }
    }
}

impl<A: Aggregate, S: EventStore + ?Sized> std::fmt::Debug for LockedRepository<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedRepository")
            .field("type", &A::TYPE)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate, S: EventStore + ?Sized> LockedRepository<A, S> {
    /// Wraps `repo`; leases last `ttl` and are extended while a command
    /// runs.
    pub fn new(repo: Repository<A, S>, locks: Arc<dyn LockManager>, ttl: Duration) -> Self {
        Self {
            repo,
            locks,
            ttl: ttl.max(Duration::from_millis(2)),
        }
    }

    /// The wrapped repository (for loads and unlocked commands).
    pub fn repository(&self) -> &Repository<A, S> {
        &self.repo
    }

    /// The lock key of a stream.
    pub fn lock_key(stream_id: impl Into<StreamId>) -> String {
        format!("{}:{}", A::TYPE, stream_id.into())
    }

    /// Executes a command under the stream's lock with a default context.
    pub async fn execute(
        &self,
        stream_id: impl Into<StreamId>,
        command: A::Command,
    ) -> Result<CommandOutcome<A>, LockedError<A::Error>> {
        self.execute_in(stream_id, command, CommandContext::default()).await
    }

    /// Executes a command under the stream's lock.
    #[tracing::instrument(level = "debug", name = "es.redis.locked.execute", skip_all, fields(stream_type = A::TYPE))]
    pub async fn execute_in(
        &self,
        stream_id: impl Into<StreamId>,
        command: A::Command,
        mut ctx: CommandContext,
    ) -> Result<CommandOutcome<A>, LockedError<A::Error>> {
        let id: StreamId = stream_id.into();
        let guard = self
            .locks
            .acquire(&Self::lock_key(&id), self.ttl)
            .await
            .map_err(|source| LockedError::Lock {
                stream_id: id.clone(),
                source,
            })?;
        let token = guard.fencing_token();
        tracing::debug!(stream_id = %id, fencing_token = token, "stream locked");
        ctx = ctx.with_fencing_token(token);
        let result = keep_alive(&guard, self.ttl, self.repo.execute_in(id.clone(), command, ctx)).await;
        match guard.release().await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(stream_id = %id, fencing_token = token,
                "stream lock expired before release; the store's version check guarded the append"),
            Err(e) => tracing::warn!(stream_id = %id, error = %e, "stream lock release failed; it expires by TTL"),
        }
        if let Err(RepositoryError::Fenced { newer, .. }) = &result {
            // A stream token the counter never reached: the counter was
            // lost. Raised past it, the next command gets a newer token
            // (otherwise every command would be fenced off until the
            // counter caught up by itself).
            if let Err(e) = self.locks.raise_tokens_past(*newer).await {
                tracing::warn!(stream_id = %id, error = %e, "could not check the fencing-token counter");
            }
        }
        result.map_err(LockedError::Repository)
    }
}

/// Runs `work`, extending the lease every `ttl / 2` until it finishes (or
/// the lease is found lost).
async fn keep_alive<T>(guard: &LockGuard, ttl: Duration, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let period = ttl / 2;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut held = true;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick(), if held => match guard.extend(ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    held = false;
                    tracing::warn!(key = %guard.lease().key, "stream lock lost while the command runs");
                }
                Err(e) => tracing::warn!(key = %guard.lease().key, error = %e, "stream lock extension failed"),
            },
        }
    }
}
