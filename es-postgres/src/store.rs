//! [`PostgresEventStore`]: the es-core `EventStore` on PostgreSQL.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use es_core::{
    AppendResult, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, ShardFence, StoreError,
    StreamId,
};
use futures::TryStreamExt;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::batcher::{self, AppendJob};
use crate::column::{bigint, unsigned};
use crate::error::{backend, retry_transient, SetupError};
use crate::notify;
use crate::sql::{valid_identifier, Sql};
use crate::EventStoreConfig;

/// The PostgreSQL event store.
///
/// - **Appends** go through a group-commit batcher: concurrent appends are
///   written together in one statement (one commit), each caller getting
///   its own result; one conflicting append does not fail the others.
///   Optimistic concurrency costs no extra round trip: the statement
///   itself only inserts an append's rows if the stream is at the expected
///   version.
/// - **The global log is gap-safe**: readers never see a position while a
///   smaller one may still commit (see the crate docs).
/// - **Live readers** are woken by LISTEN/NOTIFY, with polling as the
///   fallback.
///
/// Cheap to clone; clones share the pool and the batcher.
#[derive(Clone)]
pub struct PostgresEventStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) sql: Arc<Sql>,
    pub(crate) config: EventStoreConfig,
    sender: RwLock<Option<mpsc::Sender<AppendJob>>>,
    workers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The LISTEN task and its wake-up counter, started by the first
    /// reader that waits (a store that only writes holds no LISTEN
    /// connection).
    listener: OnceLock<(watch::Receiver<u64>, tokio::task::JoinHandle<()>)>,
    notifier: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some((_, listener)) = self.listener.get() {
            listener.abort();
        }
        self.notifier.abort();
    }
}

impl std::fmt::Debug for PostgresEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEventStore")
            .field("schema", &self.inner.config.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresEventStore {
    /// Connects a pool of `config.max_connections` to `database_url`.
    /// Call [`migrate`](Self::migrate) before the first use of a schema.
    pub async fn connect(database_url: &str, config: EventStoreConfig) -> Result<Self, SetupError> {
        let options = PgConnectOptions::from_str(database_url)
            .map_err(|source| SetupError::Database {
                operation: "parse database url",
                source,
            })?
            // The store's statements are few and always the same shape: plan
            // them once per connection instead of on every execution.
            .options([("plan_cache_mode", "force_generic_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            // No ping before every use (a round trip per append): a dead
            // connection fails its statement, which is retried as transient.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|source| SetupError::Database {
                operation: "connect",
                source,
            })?;
        Self::with_pool(pool, config)
    }

    /// Uses an existing pool.
    pub fn with_pool(pool: PgPool, config: EventStoreConfig) -> Result<Self, SetupError> {
        if !valid_identifier(&config.schema) {
            return Err(SetupError::InvalidSchema(config.schema));
        }
        let sql = Arc::new(Sql::new(&config.schema, config.outbox));
        let (tx, rx) = mpsc::channel(config.max_batch_queue_size.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let notices = Arc::new(notify::Notifier::new());
        // Writers keep their connections between statements only if the
        // pool leaves at least one for readers.
        let processors = config.batch_processor_count.max(1);
        let keep = pool.options().get_max_connections() as usize > processors + 2;
        let notifier = notify::spawn_trailing(pool.clone(), sql.notify.clone(), Arc::clone(&notices), keep);
        let workers = (0..processors)
            .map(|_| {
                tokio::spawn(batcher::run(
                    pool.clone(),
                    Arc::clone(&sql),
                    config.clone(),
                    Arc::clone(&rx),
                    Arc::clone(&notices),
                    keep,
                ))
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                sql,
                config,
                sender: RwLock::new(Some(tx)),
                workers: std::sync::Mutex::new(workers),
                listener: OnceLock::new(),
                notifier,
            }),
        })
    }

    /// Creates the schema and its tables, or brings them up to date.
    /// Safe to run concurrently from several processes.
    pub async fn migrate(&self) -> Result<(), SetupError> {
        crate::migrate::run(&self.inner.pool, &self.inner.sql).await
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The configuration.
    pub fn config(&self) -> &EventStoreConfig {
        &self.inner.config
    }

    /// The schema this store lives in.
    pub fn schema(&self) -> &str {
        &self.inner.config.schema
    }

    /// Stops taking appends, writes everything queued, and waits for the
    /// batch processors to finish. Appends after this fail with
    /// `StoreError::Unavailable`.
    pub async fn shutdown(&self) {
        let sender = self
            .inner
            .sender
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(sender);
        let workers: Vec<_> = std::mem::take(
            &mut *self
                .inner
                .workers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for w in workers {
            let _ = w.await;
        }
    }

    /// The highest position readers may see, and the highest committed
    /// one (higher while a gap is open).
    async fn heads(&self) -> Result<(u64, u64), StoreError> {
        let inner = &self.inner;
        let (visible, committed): (i64, i64) = retry_transient(&inner.config.transient_retry, "head position", || {
            sqlx::query_as(&inner.sql.heads).fetch_one(&inner.pool)
        })
        .await?;
        Ok((visible.max(0) as u64, committed.max(0) as u64))
    }

    fn sender(&self) -> Option<mpsc::Sender<AppendJob>> {
        self.inner
            .sender
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Decodes one row of [`crate::sql`]'s event columns.
/// First and longest pause between two looks at the log while a gap hides
/// committed events from a waiting reader.
const GAP_POLL_FIRST: Duration = Duration::from_millis(2);
const GAP_POLL_MAX: Duration = Duration::from_millis(50);

/// Waits for a wake-up from the LISTEN task, at most `wait` (the whole of
/// it if that task is gone).
async fn wake_or_sleep(rx: &mut tokio::sync::watch::Receiver<u64>, wait: Duration) {
    if let Ok(Err(_)) = tokio::time::timeout(wait, rx.changed()).await {
        tokio::time::sleep(wait).await;
    }
}

pub(crate) fn decode_row(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let get_err = |e: sqlx::Error| backend("decode row", e);
    let stream_id: String = row.try_get(1).map_err(get_err)?;
    let version: i64 = row.try_get(2).map_err(get_err)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        stream_id: StreamId::from(stream_id.as_str()),
        version: version.max(0) as u64,
        reason,
    };
    // Straight from the column's JSON text to `Metadata` (no `Value` tree).
    let metadata: Metadata = match row.try_get::<sqlx::types::Json<Metadata>, _>(8) {
        Ok(sqlx::types::Json(m)) => m,
        Err(sqlx::Error::ColumnDecode { source, .. }) => return Err(corrupt(format!("metadata: {source}"))),
        Err(e) => return Err(get_err(e)),
    };
    let schema_version: i32 = row.try_get(6).map_err(get_err)?;
    let global_position =
        unsigned(row.try_get::<i64, _>(0).map_err(get_err)?).map_err(|e| corrupt(format!("global position: {e}")))?;
    let version = unsigned(version).map_err(|e| corrupt(format!("version: {e}")))?;
    Ok(RecordedEvent {
        global_position,
        stream_id: StreamId::from(stream_id),
        version,
        stream_type: row.try_get(3).map_err(get_err)?,
        event_id: row.try_get(4).map_err(get_err)?,
        event_type: row.try_get(5).map_err(get_err)?,
        schema_version: schema_version.max(0) as u32,
        payload: row.try_get(7).map_err(get_err)?,
        metadata,
        recorded_at: row.try_get(9).map_err(get_err)?,
    })
}

/// Runs a query returning event rows and decodes each row as it arrives
/// (no intermediate `Vec` of rows). The outer error is the database's (to
/// be retried if transient); the inner one a row that does not decode.
async fn fetch_events(
    pool: &PgPool,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    expected: usize,
) -> Result<Result<Vec<RecordedEvent>, StoreError>, sqlx::Error> {
    let mut rows = query.fetch(pool);
    let mut events = Vec::with_capacity(expected.min(10_000));
    while let Some(row) = rows.try_next().await? {
        match decode_row(&row) {
            Ok(event) => events.push(event),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(events))
}

impl PostgresEventStore {
    /// Queues an append for the batch processors and waits for its result.
    async fn enqueue(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        fence: Option<ShardFence>,
    ) -> Result<AppendResult, StoreError> {
        crate::sql::check_rows(stream_id, events.len())?;
        es_core::backend::validate_append(stream_id, &events)?;

        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let job = AppendJob {
            stream_type: stream_type.to_owned(),
            stream_id: stream_id.clone(),
            expected,
            events,
            fence,
            reply,
        };
        let unavailable = |reason: &str| StoreError::Unavailable {
            operation: "append",
            reason: reason.to_owned(),
        };
        let sender = self.sender().ok_or_else(|| unavailable("the store is shut down"))?;
        metrics::gauge!("es_postgres_append_queue_length").set((sender.max_capacity() - sender.capacity()) as f64);
        match tokio::time::timeout(self.inner.config.enqueue_timeout, sender.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(unavailable("the store is shut down")),
            Err(_) => return Err(unavailable("append queue full (backpressure timeout)")),
        }
        let result = answer
            .await
            .unwrap_or_else(|_| Err(unavailable("batch processor stopped")));
        metrics::histogram!("es_postgres_append_seconds").record(started.elapsed().as_secs_f64());
        if matches!(result, Err(StoreError::Conflict { .. })) {
            metrics::counter!("es_postgres_append_conflicts_total").increment(1);
        }
        result
    }
}

#[async_trait]
impl EventStore for PostgresEventStore {
    #[tracing::instrument(level = "debug", name = "es.pg.append", skip_all, fields(stream_id = %stream_id, events = events.len()))]
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.enqueue(stream_type, stream_id, expected, events, None).await
    }

    #[tracing::instrument(level = "debug", name = "es.pg.append_fenced", skip_all,
        fields(stream_id = %stream_id, events = events.len(), shard = fence.shard, token = fence.token))]
    async fn append_fenced(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        fence: ShardFence,
    ) -> Result<AppendResult, StoreError> {
        self.enqueue(stream_type, stream_id, expected, events, Some(fence))
            .await
    }

    #[tracing::instrument(name = "es.pg.raise_fence", skip(self))]
    async fn raise_fence(&self, fence: ShardFence) -> Result<(), StoreError> {
        let inner = &self.inner;
        let shard = i32::try_from(fence.shard).map_err(|_| StoreError::InvalidAppend {
            stream_id: StreamId::from(format!("shard-{}", fence.shard)),
            reason: "shard number out of range".into(),
        })?;
        let token = bigint(fence.token);
        // The shard's lock exclusively (waiting for the appends in flight
        // under the old fence), then the raise, in one transaction.
        let raised: Option<i64> = retry_transient(&inner.config.transient_retry, "raise shard fence", || async {
            let mut tx = inner.pool.begin().await?;
            // Two statements, so the simple-query protocol (no arguments).
            sqlx::Executor::execute(&mut *tx, inner.sql.fence_lock.as_str()).await?;
            let raised = sqlx::query_scalar(&inner.sql.raise_fence)
                .bind(shard)
                .bind(token)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(raised)
        })
        .await?;
        if raised.is_some() {
            return Ok(());
        }
        let current: i64 = sqlx::query_scalar(&inner.sql.shard_fence)
            .bind(shard)
            .fetch_one(&inner.pool)
            .await
            .map_err(|e| backend("read shard fence", e))?;
        Err(StoreError::Fenced {
            shard: fence.shard,
            token: fence.token,
            current: current.max(0) as u64,
        })
    }

    #[tracing::instrument(level = "debug", name = "es.pg.read_stream", skip(self), fields(stream_id = %stream_id))]
    async fn read_stream_batch(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = &self.inner;
        let rows = retry_transient(&inner.config.transient_retry, "read stream", || {
            let query = sqlx::query(&inner.sql.read_stream)
                .bind(stream_id.as_str())
                .bind(bigint(from_version))
                .bind(bigint(max_count as u64));
            fetch_events(&inner.pool, query, max_count)
        })
        .await?;
        rows
    }

    #[tracing::instrument(level = "debug", name = "es.pg.read_all", skip(self, filter))]
    async fn read_all(
        &self,
        after_position: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let or_null = |v: &Vec<String>| if v.is_empty() { None } else { Some(v.clone()) };
        let (event_types, stream_types) = (or_null(&filter.event_types), or_null(&filter.stream_types));
        let inner = &self.inner;
        let rows = retry_transient(&inner.config.transient_retry, "read all", || {
            let query = sqlx::query(&inner.sql.read_all)
                .bind(bigint(after_position))
                .bind(bigint(max_count as u64))
                .bind(event_types.clone())
                .bind(stream_types.clone());
            fetch_events(&inner.pool, query, max_count)
        })
        .await?;
        rows
    }

    async fn find_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let inner = &self.inner;
        let row = retry_transient(&inner.config.transient_retry, "find event", || {
            sqlx::query(&inner.sql.find_event)
                .bind(event_id)
                .fetch_optional(&inner.pool)
        })
        .await?;
        row.as_ref().map(decode_row).transpose()
    }

    async fn locate_events(&self, ids: &[Uuid]) -> Result<Vec<Option<(StreamId, u64, u64)>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let rows = retry_transient(&inner.config.transient_retry, "locate events", || {
            sqlx::query(&inner.sql.find_events).bind(ids).fetch_all(&inner.pool)
        })
        .await?;
        Ok(crate::batcher::stored_slots(&rows, ids))
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let v: i64 = retry_transient(&inner.config.transient_retry, "stream version", || {
            sqlx::query_scalar(&inner.sql.stream_version)
                .bind(stream_id.as_str())
                .fetch_one(&inner.pool)
        })
        .await?;
        Ok(v.max(0) as u64)
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let v: i64 = retry_transient(&inner.config.transient_retry, "head position", || {
            sqlx::query_scalar(&inner.sql.head).fetch_one(&inner.pool)
        })
        .await?;
        Ok(v.max(0) as u64)
    }

    async fn committed_position(&self) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let v: i64 = retry_transient(&inner.config.transient_retry, "committed position", || {
            sqlx::query_scalar(&inner.sql.committed_head).fetch_one(&inner.pool)
        })
        .await?;
        Ok(v.max(0) as u64)
    }

    async fn wait_for_events(&self, after_position: u64, timeout: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let inner = &self.inner;
        let mut rx = inner
            .listener
            .get_or_init(|| notify::spawn_listener(inner.pool.clone(), inner.sql.channel.clone()))
            .0
            .clone();
        let mut gap_poll = GAP_POLL_FIRST;
        loop {
            rx.mark_unchanged();
            let (visible, committed) = self.heads().await?;
            let now = tokio::time::Instant::now();
            if visible > after_position || now >= deadline {
                return Ok(());
            }
            if committed > after_position {
                // Events are committed but hidden behind a transaction still
                // in flight (a gap): no notification comes when it ends, so
                // look again soon, backing off while it stays open.
                wake_or_sleep(&mut rx, gap_poll.min(deadline - now)).await;
                gap_poll = (gap_poll * 2).min(GAP_POLL_MAX);
                continue;
            }
            wake_or_sleep(&mut rx, deadline - now).await;
            return Ok(());
        }
    }

    fn read_page_size(&self) -> usize {
        self.inner.config.read_page_size.max(1)
    }
}
