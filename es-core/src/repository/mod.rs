//! The [`Repository`]: load, decide, append with optimistic concurrency,
//! retry, and post-commit hooks.

mod batch;
mod command;
mod fence;
mod mailbox;

pub use command::{CommandContext, CommandOutcome, Decide, RepositoryError};
pub use fence::FENCING_TOKEN_HEADER;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use tokio::sync::oneshot;

use crate::{
    Aggregate, Clock, CommittedEvent, EventCodec, EventHandler, EventStore, EventValidator, RecordedEvent, RetryPolicy,
    SnapshotPolicy, SnapshotStore, Snapshotter, StateCache, StreamId, SystemClock, UpcasterRegistry, Versioned,
};
use command::Handle;
use mailbox::Pending;

/// Loads aggregates and executes commands against an [`EventStore`].
///
/// The command path: take the current state (from the cache, or the newest
/// snapshot plus the events after it), decide, validate, append with the
/// state's version as the expected version, run post-commit handlers,
/// answer. On a version conflict the state is completed with the events
/// after it and the command decided again, with backoff
/// ([`RetryPolicy`], default 3 attempts from 100 ms).
///
/// **Commands to one stream are serialized in process and batched**: while
/// one batch of commands to a stream is being appended, later commands to
/// the same stream queue up and are then decided one after another on the
/// evolving state and appended together in one atomic append. Commands of
/// one process therefore never conflict with each other, and a hot stream
/// costs one store round trip per batch, not per command. Each command
/// still gets its own answer, in queue order.
///
/// **Cached states are verified, never trusted**: a state from the cache
/// (or kept from the previous batch) may be stale when another process
/// wrote since. An accepted command proves it was current, because the
/// append pins its exact version; a rejected or no-op command, which
/// appends nothing, is confirmed by reading the events after the state's
/// version before it is answered. A stale cache costs a retry, never a
/// wrong answer.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use es_core::{Aggregate, DomainEvent, InMemoryEventStore, Repository};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// struct Counter { value: u64 }
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum Event { Added(u64) }
/// impl DomainEvent for Event { fn event_type(&self) -> &'static str { "Added" } }
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "counter";
///     type Command = u64;
///     type Event = Event;
///     type Error = std::convert::Infallible;
///     fn handle(&self, n: &u64) -> Result<Vec<Event>, Self::Error> { Ok(vec![Event::Added(*n)]) }
///     fn apply(&mut self, Event::Added(n): &Event) { self.value += n }
/// }
///
/// let repo = Repository::<Counter>::builder(Arc::new(InMemoryEventStore::new())).build();
/// repo.execute("c-1", 2).await.unwrap();
/// let out = repo.execute("c-1", 3).await.unwrap();
/// assert_eq!((out.state.value, out.version), (5, 2));
/// assert_eq!(repo.load("c-1").await.unwrap().state.value, 5);
/// # });
/// ```
pub struct Repository<A: Aggregate, S: EventStore + ?Sized = dyn EventStore> {
    inner: Arc<Inner<A, S>>,
}

impl<A: Aggregate, S: EventStore + ?Sized> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

pub(crate) struct Inner<A: Aggregate, S: EventStore + ?Sized> {
    pub(crate) store: Arc<S>,
    pub(crate) codec: EventCodec,
    pub(crate) snapshots: Option<Arc<dyn SnapshotStore>>,
    pub(crate) snapshot_policy: SnapshotPolicy,
    pub(crate) cache: Option<Arc<dyn StateCache<A>>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) validators: Vec<Arc<dyn EventValidator<A>>>,
    pub(crate) handlers: Vec<Arc<dyn EventHandler<A>>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) max_batch: usize,
    /// The commands waiting per stream, looked up on every command. Only
    /// streams with commands in flight are in it, so a fast hasher is safe.
    pub(crate) mailboxes: Mutex<HashMap<StreamId, VecDeque<Pending<A>>, foldhash::fast::RandomState>>,
}

/// Builds a [`Repository`].
pub struct RepositoryBuilder<A: Aggregate, S: EventStore + ?Sized> {
    inner: Inner<A, S>,
}

impl<A: Aggregate, S: EventStore + ?Sized> RepositoryBuilder<A, S> {
    /// Snapshots into `store` by `policy`; loading starts from the newest.
    #[must_use]
    pub fn snapshots(mut self, store: Arc<dyn SnapshotStore>, policy: SnapshotPolicy) -> Self {
        self.inner.snapshots = Some(store);
        self.inner.snapshot_policy = policy;
        self
    }

    /// Snapshots by a [`Snapshotter`]: its store and policy, as
    /// [`snapshots`](Self::snapshots) takes them apart.
    #[must_use]
    pub fn snapshotter(self, snapshotter: Snapshotter) -> Self {
        self.snapshots(Arc::clone(snapshotter.store()), snapshotter.policy())
    }

    /// Uses an aggregate-state cache.
    #[must_use]
    pub fn cache(mut self, cache: Arc<dyn StateCache<A>>) -> Self {
        self.inner.cache = Some(cache);
        self
    }

    /// Sets the conflict retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.inner.retry = retry;
        self
    }

    /// Adds an event validator.
    #[must_use]
    pub fn validator(mut self, validator: impl EventValidator<A>) -> Self {
        self.inner.validators.push(Arc::new(validator));
        self
    }

    /// Adds a post-commit event handler.
    #[must_use]
    pub fn handler(mut self, handler: Arc<dyn EventHandler<A>>) -> Self {
        self.inner.handlers.push(handler);
        self
    }

    /// Sets the clock that stamps events.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.inner.clock = clock;
        self
    }

    /// Sets the upcasters used when reading events.
    #[must_use]
    pub fn upcasters(mut self, upcasters: UpcasterRegistry) -> Self {
        self.inner.codec = EventCodec::new(upcasters);
        self
    }

    /// Sets how many queued commands of one stream go into one append
    /// (default 256).
    #[must_use]
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.inner.max_batch = max_batch.max(1);
        self
    }

    /// Builds the repository.
    pub fn build(self) -> Repository<A, S> {
        Repository {
            inner: Arc::new(self.inner),
        }
    }
}

impl<A: Aggregate, S: EventStore + ?Sized> Repository<A, S> {
    /// A builder over `store`, with no snapshots, no cache, the default
    /// retry policy and the system clock.
    pub fn builder(store: Arc<S>) -> RepositoryBuilder<A, S> {
        RepositoryBuilder {
            inner: Inner {
                store,
                codec: EventCodec::default(),
                snapshots: None,
                snapshot_policy: SnapshotPolicy::Never,
                cache: None,
                retry: RetryPolicy::default(),
                validators: Vec::new(),
                handlers: Vec::new(),
                clock: Arc::new(SystemClock),
                max_batch: 256,
                mailboxes: Mutex::new(HashMap::default()),
            },
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<S> {
        &self.inner.store
    }

    /// The codec used to encode and decode events.
    pub fn codec(&self) -> &EventCodec {
        &self.inner.codec
    }

    /// Executes a command with a default context.
    pub async fn execute(
        &self,
        stream_id: impl Into<StreamId>,
        command: A::Command,
    ) -> Result<CommandOutcome<A>, RepositoryError<A::Error>> {
        self.execute_in(stream_id, command, CommandContext::default()).await
    }

    /// Executes a command with the given context.
    pub async fn execute_in(
        &self,
        stream_id: impl Into<StreamId>,
        command: A::Command,
        ctx: CommandContext,
    ) -> Result<CommandOutcome<A>, RepositoryError<A::Error>> {
        self.submit(stream_id.into(), Box::new(Handle::<A>(command)), ctx).await
    }

    /// Executes an async decision that may call outside services.
    pub async fn execute_with(
        &self,
        stream_id: impl Into<StreamId>,
        decider: impl Decide<A>,
        ctx: CommandContext,
    ) -> Result<CommandOutcome<A>, RepositoryError<A::Error>> {
        self.submit(stream_id.into(), Box::new(decider), ctx).await
    }

    #[tracing::instrument(level = "debug", name = "es.repository.execute", skip_all, fields(stream_type = A::TYPE, stream_id = %stream_id))]
    async fn submit(
        &self,
        stream_id: StreamId,
        decide: Box<dyn Decide<A>>,
        ctx: CommandContext,
    ) -> Result<CommandOutcome<A>, RepositoryError<A::Error>> {
        let (reply, answer) = oneshot::channel();
        mailbox::enqueue(&self.inner, stream_id, Pending { decide, ctx, reply });
        answer
            .await
            .unwrap_or_else(|_| Err(RepositoryError::Aborted("the stream's worker stopped".into())))
    }

    /// The current state of a stream: cache or snapshot, completed with
    /// every event after it. A stream that does not exist loads as the
    /// default state at version 0.
    pub async fn load(&self, stream_id: impl Into<StreamId>) -> Result<Versioned<A>, RepositoryError<A::Error>> {
        self.load_stream(stream_id.into()).await
    }

    #[tracing::instrument(level = "debug", name = "es.repository.load", skip_all, fields(stream_type = A::TYPE, stream_id = %id))]
    async fn load_stream(&self, id: StreamId) -> Result<Versioned<A>, RepositoryError<A::Error>> {
        let mut state = self.inner.starting_state(&id).await?;
        self.inner.complete(&id, &mut state).await?;
        Ok(state)
    }

    /// Every event of a stream, decoded, in version order.
    pub async fn history(
        &self,
        stream_id: impl Into<StreamId>,
    ) -> Result<Vec<CommittedEvent<A::Event>>, RepositoryError<A::Error>> {
        let id: StreamId = stream_id.into();
        let records: Vec<RecordedEvent> = self.inner.store.read_stream(&id, 1).try_collect().await?;
        records.iter().map(|r| self.inner.decode(r)).collect()
    }

    /// At most `limit` events of a stream with versions after `after`,
    /// decoded, in version order: one page of [`history`](Self::history),
    /// read with one bounded store query whatever the stream's length.
    /// The next page starts after the last version returned.
    pub async fn history_page(
        &self,
        stream_id: impl Into<StreamId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<CommittedEvent<A::Event>>, RepositoryError<A::Error>> {
        let id: StreamId = stream_id.into();
        if limit == 0 {
            return Ok(Vec::new());
        }
        let records = self
            .inner
            .store
            .read_stream_batch(&id, after.saturating_add(1), limit)
            .await?;
        records.iter().map(|r| self.inner.decode(r)).collect()
    }
}

/// A record of another aggregate type's stream is not decoded as `A`.
fn check_type<A: Aggregate>(r: &RecordedEvent) -> Result<(), RepositoryError<A::Error>> {
    if r.stream_type == A::TYPE {
        return Ok(());
    }
    Err(RepositoryError::WrongType {
        stream_id: r.stream_id.clone(),
        expected: A::TYPE,
        found: r.stream_type.clone(),
    })
}

impl<A: Aggregate, S: EventStore + ?Sized> Inner<A, S> {
    pub(crate) fn decode(&self, r: &RecordedEvent) -> Result<CommittedEvent<A::Event>, RepositoryError<A::Error>> {
        check_type::<A>(r)?;
        let event = self
            .codec
            .decode::<A::Event>(r)
            .map_err(|source| RepositoryError::Corrupt {
                stream_id: r.stream_id.clone(),
                version: r.version,
                source,
            })?;
        Ok(CommittedEvent {
            event,
            event_id: r.event_id,
            version: r.version,
            global_position: r.global_position,
            metadata: r.metadata.clone(),
            recorded_at: r.recorded_at,
        })
    }

    /// Where loading starts: the cached state, else the newest usable
    /// snapshot, else the default state at version 0. Not yet completed.
    pub(crate) async fn starting_state(&self, id: &StreamId) -> Result<Versioned<A>, RepositoryError<A::Error>> {
        if let Some(cache) = &self.cache {
            if let Some(hit) = cache.get(id).await {
                return Ok(hit);
            }
        }
        if let Some(snapshots) = &self.snapshots {
            match snapshots.load(id).await {
                Ok(Some(s)) if s.schema_version == A::SNAPSHOT_VERSION && s.stream_type == A::TYPE => {
                    match serde_json::from_value::<A>(s.state) {
                        Ok(state) => {
                            return Ok(Versioned {
                                state,
                                version: s.version,
                            })
                        }
                        Err(e) => {
                            tracing::warn!(stream_id = %id, version = s.version, error = %e, "snapshot does not decode; rebuilding from events");
                        }
                    }
                }
                Ok(Some(s)) => {
                    tracing::debug!(stream_id = %id, snapshot_schema = s.schema_version, "snapshot of another schema version discarded");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(stream_id = %id, error = %e, "snapshot load failed; rebuilding from events"),
            }
        }
        Ok(Versioned {
            state: A::default(),
            version: 0,
        })
    }

    /// Applies every stored event after `state.version`; returns how many.
    pub(crate) async fn complete(
        &self,
        id: &StreamId,
        state: &mut Versioned<A>,
    ) -> Result<u64, RepositoryError<A::Error>> {
        // A state at `u64::MAX` (a cache entry written by hand, say) has
        // no next version: reported, not wrapped around to version 0.
        let next = |state: &Versioned<A>| -> Result<u64, RepositoryError<A::Error>> {
            state.version.checked_add(1).ok_or_else(|| {
                RepositoryError::Store(Arc::new(crate::StoreError::Corrupt {
                    stream_id: id.clone(),
                    version: state.version,
                    reason: "no version follows this one".into(),
                }))
            })
        };
        let mut events = self.store.read_stream(id, next(state)?);
        let mut n = 0;
        while let Some(record) = events.try_next().await? {
            let expected = next(state)?;
            if record.version != expected {
                return Err(RepositoryError::Store(Arc::new(crate::StoreError::Corrupt {
                    stream_id: id.clone(),
                    version: record.version,
                    reason: format!("expected version {expected}"),
                })));
            }
            check_type::<A>(&record)?;
            let event = self
                .codec
                .decode::<A::Event>(&record)
                .map_err(|source| RepositoryError::Corrupt {
                    stream_id: id.clone(),
                    version: record.version,
                    source,
                })?;
            state.state.apply(&event);
            state.version = record.version;
            n += 1;
        }
        Ok(n)
    }
}
