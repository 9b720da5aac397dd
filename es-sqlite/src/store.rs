//! [`SqliteEventStore`]: the es-core `EventStore` on an SQLite file.

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use es_core::{
    AppendResult, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StoreError, StreamId,
};
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::batcher::{self, AppendJob, Counters, Encoded, Writer, WriterStats};
use crate::error::{is_transient, retry_transient, setup, SetupError};
use crate::gate::WriteGate;
use crate::sql::{self, signed, unsigned};
use crate::SqliteConfig;

/// The SQLite event store: one database file (or a private in-memory
/// database) per store.
///
/// - **Appends** go through the one writer task and its own connection,
///   which commits whatever appends queued while it was busy in one
///   transaction (group commit); each append is checked against its
///   expected version inside that transaction, and one failing append does
///   not fail the others.
/// - **Reads** go through a separate pool ([`pool`](Self::pool)); in WAL
///   mode they never wait for the writer and see only committed events.
/// - **The global log is never skipped by a reader**: positions are
///   assigned inside the single writer's transaction, above every
///   committed position, so they grow in commit order (see the crate docs).
/// - **Live readers** ([`EventStore::wait_for_events`]) are woken by the
///   writer of this process at once, and poll every
///   [`poll_interval`](SqliteConfig::poll_interval) for appends of other
///   processes on the same file.
///
/// Cheap to clone; clones share the pool and the writer.
#[derive(Clone)]
pub struct SqliteEventStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: SqlitePool,
    pub(crate) config: SqliteConfig,
    sender: RwLock<Option<mpsc::Sender<AppendJob>>>,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Turns at writing, shared by every writer of this process on the file.
    pub(crate) gate: Arc<WriteGate>,
    /// The last position the writer committed.
    head: Arc<watch::Sender<u64>>,
    counters: Arc<Counters>,
    /// A temporary database removed with the store (tests).
    #[cfg(feature = "testing")]
    pub(crate) temporary: std::sync::OnceLock<crate::testing::TempDatabase>,
}

impl std::fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("synchronous", &self.inner.config.synchronous)
            .finish_non_exhaustive()
    }
}

/// Whether `url` names an in-memory database.
fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

impl SqliteEventStore {
    /// Opens (creating it and its directory if missing) the database at
    /// `url` and brings its tables up to date: the migrations run here,
    /// before the store takes appends.
    ///
    /// `url` is a file path (`data/bank.db`), an `sqlite://` URL
    /// (`sqlite://data/bank.db`, `sqlite:///var/lib/bank.db`, with
    /// SQLite's URI parameters if wanted), or `sqlite::memory:` for a
    /// private in-memory database (tests; it lives as long as the store).
    /// A file is switched to WAL mode, which stays a property of the file.
    pub async fn connect(url: &str, config: SqliteConfig) -> Result<Self, SetupError> {
        let memory = is_memory(url);
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(setup("parse database url"))?
        } else {
            SqliteConnectOptions::new().filename(url)
        }
        .create_if_missing(true)
        .busy_timeout(config.busy_timeout)
        .synchronous(config.synchronous.into());
        if !memory {
            if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|source| SetupError::Directory {
                        path: dir.to_owned(),
                        source,
                    })?;
            }
        }
        // The writer's own connection. It switches the file to WAL once (a
        // change of journal mode cannot wait on the busy timeout, hence
        // the retries) and runs the migrations; the readers' connections
        // find the file in WAL mode already.
        let writer_options = if memory {
            options.clone()
        } else {
            options.clone().journal_mode(SqliteJournalMode::Wal)
        };
        let mut conn = open(&writer_options, &config).await?;
        let gate = if memory {
            WriteGate::private(config.busy_timeout)
        } else {
            WriteGate::for_file(options.get_filename(), config.busy_timeout).await
        };
        {
            let _turn = gate.enter().await;
            crate::migrate::run(&mut conn).await?;
        }
        let mut pool_options = SqlitePoolOptions::new()
            .max_connections(config.read_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false);
        if memory {
            // An in-memory database lives while a connection to it is open:
            // keep one in the pool for the store's whole life.
            pool_options = pool_options.min_connections(1).idle_timeout(None).max_lifetime(None);
        }
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(setup("open the read pool"))?;
        let head: i64 = sqlx::query_scalar(sql::HEAD)
            .fetch_one(&mut conn)
            .await
            .map_err(setup("read the head position"))?;
        let head = Arc::new(watch::channel(unsigned(head)).0);
        let counters = Arc::new(Counters::default());
        let (sender, queue) = mpsc::channel(config.max_batch_queue_size.max(1));
        let writer = tokio::spawn(batcher::run(
            Writer {
                conn,
                config: config.clone(),
                gate: Arc::clone(&gate),
                head: Arc::clone(&head),
                counters: Arc::clone(&counters),
            },
            queue,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                sender: RwLock::new(Some(sender)),
                writer: tokio::sync::Mutex::new(Some(writer)),
                gate,
                head,
                counters,
                #[cfg(feature = "testing")]
                temporary: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Brings the tables up to date. [`connect`](Self::connect) already
    /// does; this is for symmetry with es-postgres (code written for
    /// either calls `migrate` after `connect`), and safe to call any time,
    /// from any number of processes.
    pub async fn migrate(&self) -> Result<(), SetupError> {
        let mut conn = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(setup("acquire a connection to migrate"))?;
        let _turn = self.inner.gate.enter().await;
        crate::migrate::run(&mut conn).await
    }

    /// The pool of the readers (also for read models of projections).
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// The configuration.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    /// What the writer has committed since the store was opened.
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.counters.snapshot()
    }

    /// Stops taking appends, commits everything queued, and waits for the
    /// writer to close its connection. Appends after this fail with
    /// `StoreError::Unavailable`; reads keep working until the pool is
    /// closed ([`SqlitePool::close`]) or the store dropped.
    pub async fn shutdown(&self) {
        let sender = self
            .inner
            .sender
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(sender);
        let writer = self.inner.writer.lock().await.take();
        if let Some(writer) = writer {
            if let Err(e) = writer.await {
                tracing::error!(error = %e, "the writer task failed");
            }
        }
    }

    fn sender(&self) -> Option<mpsc::Sender<AppendJob>> {
        self.inner
            .sender
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Opens one connection, retrying while another process holds a lock.
async fn open(options: &SqliteConnectOptions, config: &SqliteConfig) -> Result<SqliteConnection, SetupError> {
    config
        .transient_retry
        .run(
            || options.connect(),
            is_transient,
            |e, attempt| tracing::warn!(error = %e, attempt, "database busy while opening; retrying"),
        )
        .await
        .map_err(setup("open the database"))
}

/// One event of a page, as `sql::event_page!` writes it.
type PageEvent = (
    u64,
    String,
    u64,
    String,
    String,
    String,
    u32,
    i64,
    u8,
    u8,
    serde_json::Value,
    Option<Metadata>,
);

/// Decodes a page of events (a JSON array built by SQLite).
pub(crate) fn decode_page(page: &str) -> Result<Vec<RecordedEvent>, StoreError> {
    let events: Vec<PageEvent> =
        serde_json::from_str(page).map_err(|e| StoreError::backend("decode a page of events", e))?;
    events.into_iter().map(decode_event).collect()
}

fn decode_event(e: PageEvent) -> Result<RecordedEvent, StoreError> {
    let (position, stream_id, version, stream_type, event_id, event_type, schema_version, recorded_at) =
        (e.0, StreamId::from(e.1), e.2, e.3, e.4, e.5, e.6, e.7);
    let corrupt = |reason: String| StoreError::Corrupt {
        stream_id: stream_id.clone(),
        version,
        reason,
    };
    if e.8 != 1 {
        return Err(corrupt("payload: not JSON".into()));
    }
    let Some(metadata) = e.11.filter(|_| e.9 == 1) else {
        return Err(corrupt("metadata: not JSON".into()));
    };
    Ok(RecordedEvent {
        global_position: position,
        version,
        stream_type,
        event_id: Uuid::try_parse(&event_id).map_err(|err| corrupt(format!("event id: {err}")))?,
        event_type,
        schema_version,
        payload: e.10,
        metadata,
        recorded_at: sql::from_micros(recorded_at).ok_or_else(|| corrupt(format!("recorded_at {recorded_at}")))?,
        stream_id,
    })
}

/// Runs a query returning one page of events and decodes it. The outer
/// error is the database's (to be retried if transient); the inner one a
/// page that does not decode.
async fn fetch_page<'q>(
    pool: &SqlitePool,
    query: sqlx::query::QueryScalar<'q, Sqlite, String, SqliteArguments<'q>>,
) -> Result<Result<Vec<RecordedEvent>, StoreError>, sqlx::Error> {
    let page = query.fetch_one(pool).await?;
    Ok(decode_page(&page))
}

/// A filter's list as the JSON array the log query takes (NULL: all).
fn json_list(values: &[String]) -> Option<String> {
    if values.is_empty() {
        None
    } else {
        serde_json::to_string(values).ok()
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    #[tracing::instrument(level = "debug", name = "es.sqlite.append", skip_all, fields(stream_id = %stream_id, events = events.len()))]
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        es_core::backend::validate_append(stream_id, &events)?;
        let started = Instant::now();
        let encoded = events
            .iter()
            .map(|e| {
                let metadata = serde_json::to_string(&e.metadata).map_err(|err| StoreError::InvalidAppend {
                    stream_id: stream_id.clone(),
                    reason: format!("metadata of event {} does not serialize: {err}", e.event_id),
                })?;
                Ok(Encoded {
                    payload: e.payload.to_string(),
                    metadata,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (reply, answer) = oneshot::channel();
        let job = AppendJob {
            stream_type: stream_type.to_owned(),
            stream_id: stream_id.clone(),
            expected,
            events,
            encoded,
            reply,
        };
        let unavailable = |reason: &str| StoreError::Unavailable {
            operation: "append",
            reason: reason.to_owned(),
        };
        let sender = self.sender().ok_or_else(|| unavailable("the store is shut down"))?;
        metrics::gauge!("es_sqlite_append_queue_length").set((sender.max_capacity() - sender.capacity()) as f64);
        match tokio::time::timeout(self.inner.config.enqueue_timeout, sender.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(unavailable("the store is shut down")),
            Err(_) => return Err(unavailable("append queue full (backpressure timeout)")),
        }
        let result = answer.await.unwrap_or_else(|_| Err(unavailable("the writer stopped")));
        metrics::histogram!("es_sqlite_append_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.read_stream", skip(self), fields(stream_id = %stream_id))]
    async fn read_stream_batch(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = &self.inner;
        retry_transient(&inner.config.transient_retry, "read stream", || {
            let query = sqlx::query_scalar(sql::READ_STREAM)
                .bind(stream_id.as_str())
                .bind(signed(from_version))
                .bind(signed(max_count as u64));
            fetch_page(&inner.pool, query)
        })
        .await?
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.read_all", skip(self, filter))]
    async fn read_all(
        &self,
        after_position: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let (event_types, stream_types) = (json_list(&filter.event_types), json_list(&filter.stream_types));
        let inner = &self.inner;
        retry_transient(&inner.config.transient_retry, "read all", || {
            let query = sqlx::query_scalar(sql::READ_ALL)
                .bind(signed(after_position))
                .bind(signed(max_count as u64))
                .bind(event_types.clone())
                .bind(stream_types.clone());
            fetch_page(&inner.pool, query)
        })
        .await?
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.find_event", skip(self))]
    async fn find_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let inner = &self.inner;
        let found = retry_transient(&inner.config.transient_retry, "find event", || {
            fetch_page(&inner.pool, sqlx::query_scalar(sql::FIND_EVENT).bind(event_id))
        })
        .await??;
        Ok(found.into_iter().next())
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.stream_version", skip(self), fields(stream_id = %stream_id))]
    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let v: i64 = retry_transient(&inner.config.transient_retry, "stream version", || {
            sqlx::query_scalar(sql::STREAM_VERSION)
                .bind(stream_id.as_str())
                .fetch_one(&inner.pool)
        })
        .await?;
        Ok(unsigned(v))
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let v: i64 = retry_transient(&inner.config.transient_retry, "head position", || {
            sqlx::query_scalar(sql::HEAD).fetch_one(&inner.pool)
        })
        .await?;
        Ok(unsigned(v))
    }

    async fn wait_for_events(&self, after_position: u64, timeout: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribed before looking at the log: a commit after the look
        // still wakes this reader.
        let mut commits = self.inner.head.subscribe();
        loop {
            if self.head_position().await? > after_position {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(());
            }
            // Woken by this process's writer, or look again after the
            // poll interval (another process may have written).
            let wait = self.inner.config.poll_interval.min(deadline - now);
            let _ = tokio::time::timeout(wait, commits.changed()).await;
            commits.borrow_and_update();
        }
    }

    fn read_page_size(&self) -> usize {
        self.inner.config.read_page_size.max(1)
    }
}
