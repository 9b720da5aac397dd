//! Write-behind: appends admitted by Redis, flushed to the store in the
//! background, with every guarantee of a direct append.
//!
//! [`WriteBehindStore`] wraps any [`EventStore`] (PostgreSQL in
//! production). An append is admitted by one atomic Redis script that
//! checks the expected version against the stream's version kept in Redis
//! (read from the store the first time a stream is seen), bumps it and
//! queues the events, with their ids, on the stream's shard list; the
//! caller is answered once Redis has them. Concurrent appends share one
//! script call (and so one Redis fsync). A [`Flusher`] moves the queued
//! appends into the store with the reliable-queue pattern, in big batches.
//!
//! What holds, and from when:
//! - **Versions and conflicts** are decided at admission: gapless per
//!   stream, one winner per version, across every process sharing the
//!   Redis (the script is the serialization point; with shard ownership
//!   the owner is also the only writer).
//! - **Idempotency by event id**: ids are looked up in the store, then in
//!   Redis (pending ones, and flushed ones for
//!   [`id_grace`](WriteBehindConfig::id_grace)); a re-sent append gets its
//!   original answer.
//! - **Reading your writes**: stream reads return the store's events
//!   followed by the stream's pending ones; [`stream_version`] and
//!   [`find_event`] see pending events too.
//! - **The global log** ([`read_all`], projections, outboxes, CDC) sees an
//!   event once it is flushed (positions are given then:
//!   [`defers_global_positions`] is true).
//! - **Durability** of an acknowledged append is Redis's: with AOF and
//!   `appendfsync always` it survives a Redis restart; with `everysec` up
//!   to a second of appends can be lost, without AOF everything pending.
//!   [`WriteBehindStore::durability`] says which, and building the store
//!   logs a warning unless it is `always`.
//! - **Divergence is never overwritten**: the store's unique (stream,
//!   version) and event id stay the final guard. An append the store
//!   refuses (for example after Redis restarted without AOF and read an
//!   older version from the store) goes to a dead list, the stream is
//!   marked diverged and further appends to it fail with
//!   [`StoreError::Diverged`]; a metric counts it.
//!
//! Every writer of a stream must go through write-behind (or through the
//! store before write-behind ever saw the stream).
//!
//! [`stream_version`]: EventStore::stream_version
//! [`find_event`]: EventStore::find_event
//! [`read_all`]: EventStore::read_all
//! [`defers_global_positions`]: EventStore::defers_global_positions
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use es_core::{EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, StreamId};
//! use es_redis::{RedisConfig, WriteBehindConfig, WriteBehindStore};
//!
//! let store = WriteBehindStore::builder(Arc::new(InMemoryEventStore::new()))
//!     .redis(RedisConfig { url: "redis://127.0.0.1:6379".into(), ..RedisConfig::default() })
//!     .config(WriteBehindConfig { key_prefix: "demo:wb".into(), ..WriteBehindConfig::default() })
//!     .build()
//!     .await?;
//! let id = StreamId::from("account-1");
//! let ok = store
//!     .append("account", &id, ExpectedVersion::NoStream, vec![NewEvent::new("Opened", serde_json::json!({}))])
//!     .await?;
//! assert_eq!(ok.new_version, 1);
//! assert_eq!(store.stream_version(&id).await?, 1); // before the flush, too
//! store.shutdown().await; // flushes what it holds
//! # Ok(()) }
//! ```

mod admission;
mod config;
mod flusher;
mod record;
mod redis_io;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::{
    AppendResult, EventFilter, EventStore, ExpectedVersion, NewEvent, RecordedEvent, ShardFence, StoreError, StreamId,
};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

pub use config::WriteBehindConfig;
pub use flusher::{FlushError, Flusher, FlusherHandle, FlusherStatus, Taken, TakenAppend, Written, BACKLOG_REFRESH};

use admission::{Admission, Job};
use record::{parse_location, PendingBody};
use redis_io::{eval, store_error};
use scripts::scripts;

use crate::{Idempotency, RedisBackend, RedisConfig, ResilienceConfig};

/// How durable an acknowledged append is, from Redis's persistence
/// settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// AOF with `appendfsync always`: an acknowledged append survives a
    /// Redis restart or crash.
    EveryAppend,
    /// AOF with `appendfsync everysec`: up to about a second of
    /// acknowledged appends can be lost if Redis's machine crashes.
    EverySecond,
    /// AOF with `appendfsync no`, or no AOF: acknowledged appends not yet
    /// flushed are lost if Redis restarts.
    None,
    /// Redis did not say (CONFIG disabled, or unreachable at start).
    Unknown,
}

/// Builds a [`WriteBehindStore`].
pub struct WriteBehindBuilder<S: EventStore + ?Sized> {
    inner: Arc<S>,
    redis: RedisConfig,
    resilience: ResilienceConfig,
    backend: Option<Arc<RedisBackend>>,
    config: WriteBehindConfig,
}

impl<S: EventStore + ?Sized> WriteBehindBuilder<S> {
    /// Where Redis is (ignored when a backend is given).
    #[must_use]
    pub fn redis(mut self, redis: RedisConfig) -> Self {
        self.redis = redis;
        self
    }

    /// Timeouts, retries and circuit breaking of the Redis calls (ignored
    /// when a backend is given).
    #[must_use]
    pub fn resilience(mut self, resilience: ResilienceConfig) -> Self {
        self.resilience = resilience;
        self
    }

    /// Uses this backend (and its connections) for every Redis call.
    #[must_use]
    pub fn backend(mut self, backend: Arc<RedisBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The write-behind settings.
    #[must_use]
    pub fn config(mut self, config: WriteBehindConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the admission processors (and, with
    /// [`spawn_flusher`](WriteBehindConfig::spawn_flusher), a flusher) on
    /// the current tokio runtime, and reads Redis's persistence settings.
    pub async fn build(self) -> Result<WriteBehindStore<S>, StoreError> {
        let backend = match self.backend {
            Some(b) => b,
            None => Arc::new(
                RedisBackend::new("write_behind", &self.redis, &self.resilience)
                    .map_err(|e| store_error("write-behind connect", e))?,
            ),
        };
        check_shards(&backend, &self.config).await?;
        let tx = admission::spawn(Arc::new(Admission {
            inner: Arc::clone(&self.inner),
            backend: Arc::clone(&backend),
            config: self.config.clone(),
        }));
        let flusher = Arc::new(Flusher::new(
            Arc::clone(&self.inner),
            Arc::clone(&backend),
            self.config.clone(),
        ));
        let handle = self.config.spawn_flusher.then(|| Arc::clone(&flusher).spawn());
        let durability = durability(&backend).await;
        match durability {
            Durability::EveryAppend => {
                tracing::info!("write-behind: redis fsyncs every write (appendfsync always); acknowledged appends survive a redis restart");
            }
            other => tracing::warn!(
                durability = ?other,
                "write-behind: redis is not configured with appendonly yes and appendfsync always; \
                 acknowledged appends not yet flushed to the store may be lost if redis restarts"
            ),
        }
        Ok(WriteBehindStore {
            inner: self.inner,
            backend,
            config: self.config,
            tx,
            flusher,
            handle,
            durability,
        })
    }
}

/// An [`EventStore`] that acknowledges appends once Redis has them and
/// writes them to the wrapped store in the background. See the
/// [module documentation](self) for what holds and when.
pub struct WriteBehindStore<S: EventStore + ?Sized> {
    inner: Arc<S>,
    backend: Arc<RedisBackend>,
    config: WriteBehindConfig,
    tx: mpsc::Sender<Job>,
    flusher: Arc<Flusher<S>>,
    handle: Option<FlusherHandle>,
    durability: Durability,
}

impl<S: EventStore + ?Sized> std::fmt::Debug for WriteBehindStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehindStore")
            .field("config", &self.config)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl<S: EventStore + ?Sized> WriteBehindStore<S> {
    /// A builder writing behind into `inner`.
    pub fn builder(inner: Arc<S>) -> WriteBehindBuilder<S> {
        WriteBehindBuilder {
            inner,
            redis: RedisConfig::default(),
            resilience: ResilienceConfig::default(),
            backend: None,
            config: WriteBehindConfig::default(),
        }
    }

    /// The store written to.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// The settings.
    pub fn config(&self) -> &WriteBehindConfig {
        &self.config
    }

    /// How durable acknowledged appends are (read from Redis at build).
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// This process's flusher (running when
    /// [`spawn_flusher`](WriteBehindConfig::spawn_flusher) was set).
    pub fn flusher(&self) -> &Arc<Flusher<S>> {
        &self.flusher
    }

    /// Health of this process's flusher.
    pub fn flusher_status(&self) -> FlusherStatus {
        self.flusher.status()
    }

    /// Stops this process's flusher after it flushed what it holds.
    pub async fn shutdown(&self) {
        if let Some(h) = &self.handle {
            h.shutdown().await;
        }
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}:{kind}:{rest}", self.config.key_prefix)
    }

    async fn submit(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        fence: Option<ShardFence>,
    ) -> Result<AppendResult, StoreError> {
        es_core::backend::validate_append(stream_id, &events)?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            stream_type: stream_type.to_owned(),
            stream_id: stream_id.clone(),
            expected,
            events,
            fence,
            reply,
        };
        self.tx.try_send(job).map_err(|e| StoreError::Unavailable {
            operation: "write-behind append",
            reason: match e {
                mpsc::error::TrySendError::Full(_) => "too many appends waiting for admission".into(),
                mpsc::error::TrySendError::Closed(_) => "admission stopped".into(),
            },
        })?;
        answer.await.map_err(|_| StoreError::Unavailable {
            operation: "write-behind append",
            reason: "admission stopped".into(),
        })?
    }

    /// Runs a plain Redis command (idempotent reads).
    async fn query<T: redis::FromRedisValue + Send + 'static>(
        &self,
        operation: &'static str,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        self.backend
            .run(operation, Idempotency::Idempotent, move |mut c: ConnectionManager| {
                let cmd = cmd.clone();
                async move { cmd.query_async::<T>(&mut c).await }
            })
            .await
            .map_err(|e| store_error(operation, e))
    }

    /// The stream's pending appends, as events (position 0), in version
    /// order.
    async fn pending_events(&self, stream_id: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.key("p", stream_id.as_str()));
        let pairs: Vec<(u64, String)> = self.query("write-behind read pending", cmd).await?;
        let mut events = Vec::new();
        for (first_version, body) in pairs {
            let body = PendingBody::decode(stream_id, first_version, &body)?;
            events.extend(body.recorded(stream_id, first_version));
        }
        events.sort_by_key(|e| e.version);
        Ok(events)
    }
}

/// Records the log's number of pending lists in Redis (first process) or
/// checks it (the others): processes splitting one log differently would
/// put one stream's appends on two lists, flushed out of order. Refuses a
/// mismatch; when Redis cannot be asked, warns and goes on (admission
/// fails until it can be reached anyway).
async fn check_shards(backend: &RedisBackend, config: &WriteBehindConfig) -> Result<(), StoreError> {
    let key = format!("{}:config:shards", config.key_prefix);
    let shards = config.shards;
    let stored = backend
        .run(
            "write-behind shard count",
            Idempotency::Idempotent,
            move |mut c: ConnectionManager| {
                let key = key.clone();
                async move { crate::shared_setting::record_once(&mut c, &key, shards).await }
            },
        )
        .await;
    match stored {
        Ok(Some(stored)) if stored != shards => Err(StoreError::backend(
            "write-behind shard count",
            format!(
                "configured with {shards} shards, but the log at key prefix {} is split into {stored}: \
                 every process sharing it must use the same number",
                config.key_prefix
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "write-behind: could not check the shard count in redis");
            Ok(())
        }
    }
}

/// Reads Redis's persistence settings.
async fn durability(backend: &RedisBackend) -> Durability {
    let config = backend
        .run(
            "write-behind durability",
            Idempotency::Idempotent,
            |mut c: ConnectionManager| async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("append*")
                    .query_async::<std::collections::HashMap<String, String>>(&mut c)
                    .await
            },
        )
        .await;
    match config {
        Ok(c) => match (
            c.get("appendonly").map(String::as_str),
            c.get("appendfsync").map(String::as_str),
        ) {
            (Some("yes"), Some("always")) => Durability::EveryAppend,
            (Some("yes"), Some("everysec")) => Durability::EverySecond,
            (Some(_), _) => Durability::None,
            _ => Durability::Unknown,
        },
        Err(e) => {
            tracing::warn!(error = %e, "write-behind: cannot read redis persistence settings");
            Durability::Unknown
        }
    }
}

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for WriteBehindStore<S> {
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.submit(stream_type, stream_id, expected, events, None).await
    }

    async fn append_fenced(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        fence: ShardFence,
    ) -> Result<AppendResult, StoreError> {
        self.submit(stream_type, stream_id, expected, events, Some(fence)).await
    }

    /// Raises the fence in Redis (where fenced appends are admitted), then
    /// in the store (where direct writers are checked).
    async fn raise_fence(&self, fence: ShardFence) -> Result<(), StoreError> {
        let args = vec![
            self.config.key_prefix.clone().into_bytes(),
            fence.shard.to_string().into_bytes(),
            fence.token.to_string().into_bytes(),
        ];
        let reply = eval(&self.backend, "write-behind raise fence", &scripts().raise_fence, args).await?;
        match redis_io::int(&reply) {
            Some(0) => {}
            Some(current) => {
                return Err(StoreError::Fenced {
                    shard: fence.shard,
                    token: fence.token,
                    current,
                })
            }
            None => {
                return Err(StoreError::Backend {
                    operation: "write-behind raise fence",
                    source: "unexpected reply".into(),
                })
            }
        }
        match self.inner.raise_fence(fence).await {
            Ok(()) | Err(StoreError::Unsupported { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The store's events, then the stream's pending ones. The pending ones
    /// are read first: an append flushed between the two reads is then in
    /// one of them (or both, and kept once).
    async fn read_stream_batch(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let pending = self.pending_events(stream_id).await?;
        let mut events = self.inner.read_stream_batch(stream_id, from_version, max_count).await?;
        if events.len() >= max_count {
            return Ok(events);
        }
        let next = events.last().map_or(from_version.max(1), |e| e.version + 1);
        events.extend(
            pending
                .into_iter()
                .filter(|e| e.version >= next)
                .take(max_count - events.len()),
        );
        Ok(events)
    }

    async fn read_all(
        &self,
        after_position: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after_position, max_count, filter).await
    }

    async fn find_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        if let Some(e) = self.inner.find_event(event_id).await? {
            return Ok(Some(e));
        }
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("e", &event_id.to_string()));
        let at: Option<String> = self.query("write-behind find event", cmd).await?;
        let Some((version, stream_id)) = at.as_deref().and_then(parse_location) else {
            return Ok(None);
        };
        if let Some(e) = self
            .pending_events(&stream_id)
            .await?
            .into_iter()
            .find(|e| e.version == version)
        {
            return Ok(Some(e));
        }
        // Flushed in the meantime.
        self.inner.find_event(event_id).await
    }

    async fn locate_events(&self, ids: &[uuid::Uuid]) -> Result<Vec<Option<(StreamId, u64, u64)>>, StoreError> {
        let mut found = admission::located(ids, self.inner.locate_events(ids).await)?;
        let missing: Vec<usize> = (0..ids.len()).filter(|i| found[*i].is_none()).collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let mut cmd = redis::cmd("MGET");
        for i in &missing {
            cmd.arg(self.key("e", &ids[*i].to_string()));
        }
        let at: Vec<Option<String>> = self.query("write-behind locate events", cmd).await?;
        for (i, loc) in missing.into_iter().zip(at) {
            found[i] = loc.as_deref().and_then(parse_location).map(|(v, s)| (s, v, 0));
        }
        Ok(found)
    }

    fn defers_global_positions(&self) -> bool {
        true
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("v", stream_id.as_str()));
        let v: Option<String> = self.query("write-behind stream version", cmd).await?;
        match v.as_deref() {
            None => self.inner.stream_version(stream_id).await,
            Some("diverged") => Err(StoreError::Diverged {
                stream_id: stream_id.clone(),
                reason: "an earlier append of the stream was refused by the store; see the dead list".into(),
            }),
            Some(n) => n.parse().map_err(|_| StoreError::Corrupt {
                stream_id: stream_id.clone(),
                version: 0,
                reason: format!("write-behind version {n:?} in redis is not a number"),
            }),
        }
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner.head_position().await
    }

    async fn committed_position(&self) -> Result<u64, StoreError> {
        self.inner.committed_position().await
    }

    async fn wait_for_events(&self, after_position: u64, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_events(after_position, timeout).await
    }

    fn read_page_size(&self) -> usize {
        self.inner.read_page_size()
    }
}
