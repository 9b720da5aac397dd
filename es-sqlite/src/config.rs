//! Configuration of the SQLite event store.

use std::time::Duration;

use es_core::RetryPolicy;
use sqlx::sqlite::SqliteSynchronous;

/// How far SQLite pushes a commit towards the disk before the commit
/// returns (`PRAGMA synchronous`), in WAL mode.
///
/// The writer commits many appends per transaction (group commit), so the
/// cost of a sync is shared by every append of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `OFF`: SQLite never syncs; the operating system writes when it
    /// likes. A crash of the *process* loses nothing, but power loss or an
    /// operating-system crash can lose acknowledged appends **and may
    /// corrupt the database file**. For throw-away data only.
    Off,
    /// `NORMAL`: a commit writes the WAL without syncing it; the WAL is
    /// synced at checkpoints. A crash of the process loses nothing. On
    /// power loss or an operating-system crash the **last transactions may
    /// roll back** — appends already acknowledged can be missing after the
    /// restart — but the database is never corrupt: it comes back as it
    /// was at some earlier commit, with a consistent log.
    Normal,
    /// `FULL` (the default): every commit syncs the WAL before it returns.
    /// An acknowledged append survives power loss.
    #[default]
    Full,
}

impl From<Synchronous> for SqliteSynchronous {
    fn from(s: Synchronous) -> Self {
        match s {
            Synchronous::Off => SqliteSynchronous::Off,
            Synchronous::Normal => SqliteSynchronous::Normal,
            Synchronous::Full => SqliteSynchronous::Full,
        }
    }
}

/// Settings of a [`SqliteEventStore`](crate::SqliteEventStore).
///
/// The defaults suit a service with its database on a local disk:
/// durable commits ([`Synchronous::Full`]), batches of up to 512 appends
/// per transaction, four reader connections.
///
/// ```
/// use es_sqlite::{SqliteConfig, Synchronous};
/// let fast = SqliteConfig { synchronous: Synchronous::Normal, ..SqliteConfig::default() };
/// assert_eq!(fast.batch_size, 512);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteConfig {
    /// Durability of a commit; see [`Synchronous`] for what each level
    /// risks on power loss.
    pub synchronous: Synchronous,
    /// Most appends the writer commits in one transaction (one group
    /// commit). Whatever queued while the previous transaction ran goes
    /// in the next one; the writer never waits for a batch to fill.
    pub batch_size: usize,
    /// Appends that may wait for the writer; when full, callers wait
    /// (backpressure) up to `enqueue_timeout`.
    pub max_batch_queue_size: usize,
    /// How long an append may wait for room in a full queue before it
    /// fails with `StoreError::Unavailable`.
    pub enqueue_timeout: Duration,
    /// Connections of the pool used by readers, snapshots, checkpoints
    /// and projections (the writer has its own connection besides).
    pub read_connections: u32,
    /// How long a statement waits for a lock another connection (or
    /// process) holds before failing with `SQLITE_BUSY`
    /// (`sqlite3_busy_timeout`).
    pub busy_timeout: Duration,
    /// Retries of busy/locked failures (after `busy_timeout` ran out) and
    /// of a failed write transaction.
    pub transient_retry: RetryPolicy,
    /// Events fetched per query when paging a stream or the log.
    pub read_page_size: usize,
    /// How often a waiting reader looks at the log when no wake-up comes:
    /// appends of this store wake readers at once, appends of another
    /// process on the same file are seen by this polling.
    pub poll_interval: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            batch_size: 512,
            max_batch_queue_size: 10_000,
            enqueue_timeout: Duration::from_secs(5),
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
            transient_retry: RetryPolicy {
                max_attempts: 5,
                initial_delay: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            read_page_size: 5000,
            poll_interval: Duration::from_millis(250),
        }
    }
}
