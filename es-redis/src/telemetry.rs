//! Names of the metrics this crate records (through the `metrics` facade;
//! install any recorder, e.g. a Prometheus exporter, to collect them).
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `es_redis_cache_hits_total` | counter | `cache` (`state`/`query`), `level` (`l1`/`l2`) |
//! | `es_redis_cache_misses_total` | counter | `cache`, `level` |
//! | `es_redis_cache_stale_total` | counter | `cache` (L2 entry older than this process's own last write, ignored) |
//! | `es_redis_cache_evictions_total` | counter | `cache`, `cause` (`size`/`expired`/`explicit`; an entry replaced by a newer value is not an eviction and is not counted) |
//! | `es_redis_errors_total` | counter | `op`, `kind` (see [`RedisError::kind`](crate::RedisError::kind)) |
//! | `es_redis_op_duration_seconds` | histogram | `op` |
//! | `es_redis_shed_total` | counter | `op` |
//! | `es_redis_circuit_state` | gauge | `name`: 0 closed, 1 half-open, 2 open |
//! | `es_redis_circuit_transitions_total` | counter | `name`, `to` |
//! | `es_redis_dedup_total` | counter | `outcome` (`started`/`in_progress`/`completed`/`fail_open`/`fail_closed`) |
//! | `es_redis_lock_total` | counter | `outcome` (`acquired`/`contended`/`released`/`lost`/`extended`) |
//! | `es_shards_owned` | gauge | (none) |
//! | `es_shard_acquisitions_total` | counter | (none) |
//! | `es_shard_rebalances_total` | counter | (none): shards handed over |
//! | `es_shard_lease_losses_total` | counter | (none) |
//! | `es_write_behind_pending_appends` | gauge | `shard` (one per write-behind shard): appends admitted, not yet in the store |
//! | `es_write_behind_oldest_pending_seconds` | gauge | `shard`: age of the oldest append not yet in the store (taken by a flusher and not yet acknowledged, or still waiting) |
//! | `es_write_behind_flush_appends` | histogram | (none): appends per flush round |
//! | `es_write_behind_flush_events` | histogram | (none): events per flush round |
//! | `es_write_behind_flush_seconds` | histogram | (none): duration of a flush round |
//! | `es_write_behind_lag_seconds` | histogram | (none): admission to the store, per append |
//! | `es_write_behind_diverged_total` | counter | (none): appends the store refused (dead list) |
//! | `es_write_behind_flush_errors_total` | counter | (none): failed flush rounds (repeated) |

/// Cache hits, labelled by cache and level.
pub const CACHE_HITS: &str = "es_redis_cache_hits_total";
/// Cache misses, labelled by cache and level.
pub const CACHE_MISSES: &str = "es_redis_cache_misses_total";
/// L2 entries ignored because they are older than this process's own write.
pub const CACHE_STALE: &str = "es_redis_cache_stale_total";
/// L1 evictions, labelled by cache and cause.
pub const CACHE_EVICTIONS: &str = "es_redis_cache_evictions_total";
/// Failed Redis calls, labelled by operation and error kind.
pub const ERRORS: &str = "es_redis_errors_total";
/// Latency of Redis calls in seconds, labelled by operation.
pub const OP_DURATION: &str = "es_redis_op_duration_seconds";
/// Calls shed by the in-flight bound.
pub const SHED: &str = "es_redis_shed_total";
/// Circuit state: 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "es_redis_circuit_state";
/// Circuit state transitions.
pub const CIRCUIT_TRANSITIONS: &str = "es_redis_circuit_transitions_total";
/// De-duplication outcomes.
pub const DEDUP: &str = "es_redis_dedup_total";
/// Lock outcomes.
pub const LOCK: &str = "es_redis_lock_total";

pub(crate) fn hit(cache: &'static str, level: &'static str) {
    metrics::counter!(CACHE_HITS, "cache" => cache, "level" => level).increment(1);
}

pub(crate) fn miss(cache: &'static str, level: &'static str) {
    metrics::counter!(CACHE_MISSES, "cache" => cache, "level" => level).increment(1);
}
/// Shards this instance owns (gauge).
pub const SHARDS_OWNED: &str = "es_shards_owned";
/// Shards this instance took (counter).
pub const SHARD_ACQUISITIONS: &str = "es_shard_acquisitions_total";
/// Shards this instance handed over to another (counter).
pub const SHARD_REBALANCES: &str = "es_shard_rebalances_total";
/// Shard leases this instance lost, taken by another or lapsed (counter).
pub const SHARD_LEASE_LOSSES: &str = "es_shard_lease_losses_total";

/// Appends admitted but not yet in the store, per write-behind shard.
pub const WB_PENDING: &str = "es_write_behind_pending_appends";
/// Age of the oldest append not yet in the store (taken by a flusher, or
/// still waiting), per write-behind shard.
pub const WB_OLDEST_PENDING: &str = "es_write_behind_oldest_pending_seconds";
/// Appends written per flush round.
pub const WB_FLUSH_APPENDS: &str = "es_write_behind_flush_appends";
/// Events written per flush round.
pub const WB_FLUSH_EVENTS: &str = "es_write_behind_flush_events";
/// Duration of a flush round.
pub const WB_FLUSH_DURATION: &str = "es_write_behind_flush_seconds";
/// Time from admission to the store, per append.
pub const WB_LAG: &str = "es_write_behind_lag_seconds";
/// Appends the store refused for good.
pub const WB_DIVERGED: &str = "es_write_behind_diverged_total";
/// Failed flush rounds.
pub const WB_FLUSH_ERRORS: &str = "es_write_behind_flush_errors_total";
