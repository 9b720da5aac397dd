//! [`RedisStateCache`]: es-core's [`StateCache`] over L1 (moka) and L2
//! (Redis).

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{Aggregate, StateCache, StreamId, Versioned};
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::{l1, l2};
use crate::backend::RedisBackend;
use crate::circuit::CircuitState;
use crate::config::CacheConfig;
use crate::error::RedisError;
use crate::telemetry;

const CACHE: &str = "state";

/// A two-level aggregate-state cache for [`es_core::Repository`].
///
/// Reads try L1, then L2 (filling L1); writes go to both (write-through,
/// done by the repository after each successful append); invalidation
/// drops both. Clones share everything.
///
/// Guarantees:
/// - **No regression**: a put never replaces a newer version, in L1
///   (atomic compute) or in L2 (a Lua compare-and-set on the version).
/// - **Read-your-writes per process**: the cache remembers the highest
///   version this process wrote per stream and ignores any L2 entry older
///   than it (e.g. left behind by a failed or reordered L2 write), so a
///   process never starts from a state older than its own last write, even
///   when several processes share the Redis. It remembers the streams of
///   its last `4 × max_size` writes (at least 1,024), least recently
///   written forgotten first.
/// - **Never a reason to fail**: every Redis failure (down, slow, circuit
///   open, load shed, undecodable entry) is a miss; the repository then
///   loads from the store. When Redis comes back the circuit closes and
///   the cache resumes by itself.
/// - A cached state is only a starting point: es-core's repository proves
///   it current by the append's exact expected version or reads the tail
///   before answering, so a stale entry costs time, never correctness.
///
/// L2 keys are `{key_prefix}:state:{A::TYPE}:s{A::SNAPSHOT_VERSION}:{stream_id}`,
/// so a change of the state's serde shape (bumped `SNAPSHOT_VERSION`)
/// never reads old entries.
pub struct RedisStateCache<A: Aggregate> {
    pub(super) inner: Arc<Inner<A>>,
}

pub(super) struct Inner<A: Aggregate> {
    pub(super) l1: Cache<StreamId, Versioned<A>>,
    /// Highest version this process wrote, per stream.
    written: Cache<StreamId, u64>,
    pub(super) backend: Arc<RedisBackend>,
    pub(super) config: CacheConfig,
    key_base: String,
    pub(super) recent_key: String,
}

impl<A: Aggregate> Clone for RedisStateCache<A> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for RedisStateCache<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStateCache")
            .field("type", &A::TYPE)
            .field("l1_entries", &self.inner.l1.entry_count())
            .field("backend", &self.inner.backend)
            .finish()
    }
}

impl<A: Aggregate> RedisStateCache<A> {
    /// A cache with its own Redis connections. No I/O happens here; fails
    /// only on a malformed URL.
    pub fn new(config: CacheConfig) -> Result<Self, RedisError> {
        let backend = RedisBackend::new("state_cache", &config.redis, &config.resilience)?;
        Ok(Self::with_backend(config, Arc::new(backend)))
    }

    /// A cache over a shared backend (`config.redis` and
    /// `config.resilience` are then the backend's business).
    pub fn with_backend(config: CacheConfig, backend: Arc<RedisBackend>) -> Self {
        let key_base = format!("{}:state:{}:s{}:", config.key_prefix, A::TYPE, A::SNAPSHOT_VERSION);
        let recent_key = format!("{}:recent:{}:s{}", config.key_prefix, A::TYPE, A::SNAPSHOT_VERSION);
        // LRU, not moka's default TinyLFU: TinyLFU may refuse to admit a
        // key seen once, and a watermark is written once per write.
        let written = Cache::builder()
            .max_capacity(config.max_size.saturating_mul(4).max(1024))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        Self {
            inner: Arc::new(Inner {
                l1: l1::build(&config, CACHE),
                written,
                backend,
                config,
                key_base,
                recent_key,
            }),
        }
    }

    /// The Redis key of a stream's state.
    pub fn redis_key(&self, stream_id: impl Into<StreamId>) -> String {
        format!("{}{}", self.inner.key_base, stream_id.into())
    }

    /// The L1 entry only (no Redis call).
    pub fn get_l1(&self, stream_id: impl Into<StreamId>) -> Option<Versioned<A>> {
        self.inner.l1.get(&stream_id.into())
    }

    /// Drops every L1 entry (as after a restart); L2 and the
    /// read-your-writes watermarks are kept.
    pub fn clear_l1(&self) {
        self.inner.l1.invalidate_all();
    }

    /// The state of the Redis circuit breaker.
    pub fn circuit_state(&self) -> CircuitState {
        self.inner.backend.circuit_state()
    }

    /// The backend, for sharing with other components.
    pub fn backend(&self) -> &Arc<RedisBackend> {
        &self.inner.backend
    }

    fn watermark(&self, stream_id: &StreamId) -> u64 {
        self.inner.written.get(stream_id).unwrap_or(0)
    }

    pub(super) fn put_l1(&self, stream_id: &StreamId, state: &Versioned<A>) {
        if !self.inner.config.l1_enabled {
            return;
        }
        self.inner
            .l1
            .entry(stream_id.clone())
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().version > state.version => Op::Nop,
                _ => Op::Put(state.clone()),
            });
    }

    /// Reads L2 only, bypassing (and not filling) L1: `None` on a miss, on
    /// an entry older than this process's own last write, or on any
    /// failure.
    pub async fn get_from_redis(&self, stream_id: impl Into<StreamId>) -> Option<Versioned<A>> {
        self.l2_get(&stream_id.into()).await
    }

    #[tracing::instrument(level = "debug", name = "es.redis.cache.l2_get", skip_all, fields(stream_type = A::TYPE, stream_id = %stream_id))]
    async fn l2_get(&self, stream_id: &StreamId) -> Option<Versioned<A>> {
        let key = self.redis_key(stream_id);
        let (version, json) = match l2::get_versioned(&self.inner.backend, &key).await {
            Ok(Some(raw)) => raw,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "L2 read failed; treated as a miss");
                return None;
            }
        };
        // No store numbers a stream's events beyond i64::MAX (PostgreSQL's
        // BIGINT, SQLite's INTEGER): such an entry was not written by a
        // cache and is not trusted.
        if i64::try_from(version).is_err() {
            tracing::debug!(version, "L2 entry with an impossible version; ignored");
            return None;
        }
        if version < self.watermark(stream_id) {
            metrics::counter!(telemetry::CACHE_STALE, "cache" => CACHE).increment(1);
            tracing::debug!(version, "L2 entry older than this process's own write; ignored");
            return None;
        }
        match serde_json::from_str::<A>(&json) {
            Ok(state) => Some(Versioned { state, version }),
            Err(source) => {
                let e = RedisError::Codec {
                    direction: "decode",
                    key,
                    source,
                };
                metrics::counter!(telemetry::ERRORS, "op" => "cache.get", "kind" => e.kind()).increment(1);
                tracing::warn!(error = %e, "L2 entry does not decode; treated as a miss");
                None
            }
        }
    }

    #[tracing::instrument(level = "debug", name = "es.redis.cache.l2_put", skip_all, fields(stream_type = A::TYPE, stream_id = %stream_id, version = state.version))]
    async fn put_l2(&self, stream_id: &StreamId, state: &Versioned<A>) {
        let key = self.redis_key(stream_id);
        let json = match serde_json::to_string(&state.state) {
            Ok(j) => j,
            Err(source) => {
                let e = RedisError::Codec {
                    direction: "encode",
                    key,
                    source,
                };
                metrics::counter!(telemetry::ERRORS, "op" => "cache.put", "kind" => e.kind()).increment(1);
                tracing::warn!(error = %e, "state does not serialize; not written to L2");
                return;
            }
        };
        let recent = l2::Recent {
            key: &self.inner.recent_key,
            member: stream_id.as_str(),
            keep: self.inner.config.recent_keys,
        };
        let ttl = self.inner.config.l2_ttl;
        match l2::put_versioned(&self.inner.backend, &key, state.version, &json, ttl, recent).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("L2 holds a newer version; kept"),
            Err(e) => tracing::debug!(error = %e, "L2 write failed; L1 and the store still serve"),
        }
    }
}

#[async_trait]
impl<A: Aggregate> StateCache<A> for RedisStateCache<A> {
    async fn get(&self, stream_id: &StreamId) -> Option<Versioned<A>> {
        if self.inner.config.l1_enabled {
            if let Some(hit) = self.inner.l1.get(stream_id) {
                telemetry::hit(CACHE, "l1");
                return Some(hit);
            }
            telemetry::miss(CACHE, "l1");
        }
        if let Some(hit) = self.l2_get(stream_id).await {
            telemetry::hit(CACHE, "l2");
            self.put_l1(stream_id, &hit);
            Some(hit)
        } else {
            telemetry::miss(CACHE, "l2");
            None
        }
    }

    async fn put(&self, stream_id: &StreamId, state: &Versioned<A>) {
        self.inner
            .written
            .entry(stream_id.clone())
            .and_compute_with(|existing| match existing {
                Some(e) if *e.value() >= state.version => Op::Nop,
                _ => Op::Put(state.version),
            });
        self.put_l1(stream_id, state);
        self.put_l2(stream_id, state).await;
    }

    #[tracing::instrument(level = "debug", name = "es.redis.cache.invalidate", skip_all, fields(stream_type = A::TYPE, stream_id = %stream_id))]
    async fn invalidate(&self, stream_id: &StreamId) {
        self.inner.l1.invalidate(stream_id);
        if let Err(e) = l2::del(&self.inner.backend, &[self.redis_key(stream_id)]).await {
            tracing::debug!(error = %e, "L2 invalidation failed; the entry expires by TTL");
        }
    }
}
