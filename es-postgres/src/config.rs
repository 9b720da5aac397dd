//! Configuration of the PostgreSQL event store.

use std::time::Duration;

use es_core::RetryPolicy;

/// Settings of a [`PostgresEventStore`](crate::PostgresEventStore).
///
/// The defaults suit a service on one PostgreSQL server: batches of up to
/// 512 appends written as soon as a processor is free (no added wait),
/// two processors, a queue of 10,000 appends.
#[derive(Debug, Clone, PartialEq)]
pub struct EventStoreConfig {
    /// Schema holding the tables (a lowercase identifier); several stores,
    /// and every test, can live side by side in one database.
    pub schema: String,
    /// Most appends written in one statement (one group commit).
    pub batch_size: usize,
    /// How long a processor waits for more appends after the first before
    /// writing. 0 (the default) writes immediately: batches still form
    /// from whatever queued during the previous write, which gives group
    /// commit without adding latency.
    pub batch_timeout_ms: u64,
    /// Appends that may wait for a processor; when full, callers wait
    /// (backpressure) up to `enqueue_timeout`.
    pub max_batch_queue_size: usize,
    /// Parallel batch writers, each with its own connection.
    pub batch_processor_count: usize,
    /// Size of the connection pool (readers and writers).
    pub max_connections: u32,
    /// How long a statement waits for a pooled connection (by
    /// [`connect`](crate::PostgresEventStore::connect)'s pool), reconnecting
    /// meanwhile when the database is unreachable; then it fails with
    /// `StoreError::Backend` (`PoolTimedOut`), which is not retried. Bounds
    /// how long a caller waits while the database is down (default 2 s).
    pub acquire_timeout: Duration,
    /// How long an append may wait for room in a full queue before it
    /// fails with `StoreError::Unavailable`.
    pub enqueue_timeout: Duration,
    /// Retries of transient failures (serialization failure, deadlock,
    /// lost connection).
    pub transient_retry: RetryPolicy,
    /// Also write every appended event to the outbox table, in the same
    /// statement.
    pub outbox: bool,
    /// Events fetched per round trip when reading a stream or the log.
    pub read_page_size: usize,
}

impl Default for EventStoreConfig {
    fn default() -> Self {
        Self {
            schema: "es".into(),
            batch_size: 512,
            batch_timeout_ms: 0,
            max_batch_queue_size: 10_000,
            batch_processor_count: 2,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
            enqueue_timeout: Duration::from_secs(5),
            transient_retry: RetryPolicy {
                max_attempts: 5,
                initial_delay: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            outbox: false,
            read_page_size: 5000,
        }
    }
}

impl EventStoreConfig {
    /// The default configuration with another schema.
    pub fn with_schema(schema: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            ..Self::default()
        }
    }
}
