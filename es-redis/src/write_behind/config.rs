//! [`WriteBehindConfig`]: the knobs of the write-behind store and its
//! flusher.

use std::time::Duration;

/// Settings of a [`WriteBehindStore`](super::WriteBehindStore) and its
/// [`Flusher`](super::Flusher). Every process sharing one write-behind log
/// must use the same `key_prefix` and `shards`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBehindConfig {
    /// Prefix of every Redis key of the log (`<prefix>:v:<stream>` and so
    /// on); isolates applications or tests sharing one Redis.
    pub key_prefix: String,
    /// Pending lists the log is split into (by stream, with es-core's
    /// `shard_of`); each is flushed by one flusher at a time, in order.
    pub shards: u32,
    /// Most appends admitted by one script call.
    pub max_admission_batch: usize,
    /// Admission script calls in flight at once (each call is one Redis
    /// fsync with `appendfsync always`; several in flight share fsyncs).
    pub admission_pipelines: usize,
    /// Appends waiting for admission before new ones are refused as
    /// unavailable.
    pub max_queued_appends: usize,
    /// Most appends a flusher takes from one pending list per round.
    pub max_flush_batch: usize,
    /// How long a flusher's claim on a pending list lasts without renewal
    /// (each round renews it); after a flusher dies, another takes its
    /// lists over once this has passed.
    pub flush_lease: Duration,
    /// Pause of a flusher after a round that did not fill a batch: appends
    /// gather meanwhile, so rounds stay few and big. Bounds the time from
    /// admission to the store (with the round's own time).
    pub idle_poll: Duration,
    /// Pause after a round that could not write to the store.
    pub retry_backoff: Duration,
    /// How long event ids stay known in Redis after their events reached
    /// the store. Admission looks ids up in the store first and in Redis
    /// second; this covers a flush landing between the two lookups.
    pub id_grace: Duration,
    /// Pending events with no successful flush for this long make the
    /// flusher report itself stuck.
    pub stuck_after: Duration,
    /// Whether building the store also spawns a flusher in this process.
    pub spawn_flusher: bool,
}

impl Default for WriteBehindConfig {
    fn default() -> Self {
        Self {
            key_prefix: "es:wb".to_owned(),
            shards: 16,
            max_admission_batch: 256,
            admission_pipelines: 2,
            max_queued_appends: 10_000,
            max_flush_batch: 2_000,
            flush_lease: Duration::from_secs(5),
            idle_poll: Duration::from_millis(5),
            retry_backoff: Duration::from_millis(200),
            id_grace: Duration::from_secs(60),
            stuck_after: Duration::from_secs(10),
            spawn_flusher: true,
        }
    }
}
