//! [`QueryCache`]: cached query results (read-model views) with explicit
//! invalidation, and [`InvalidateOnEvents`] to drive it from commits.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use es_core::{Aggregate, BoxError, CommittedEvent, EventHandler, StreamId};
use moka::sync::Cache;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::generation::{self, Keys};
use super::{l1, l2};
use crate::backend::RedisBackend;
use crate::config::CacheConfig;
use crate::error::RedisError;
use crate::telemetry;

const CACHE: &str = "query";

/// A two-level cache of query results of type `V`, keyed by string.
///
/// Guarantees:
/// - Invalidation removes the key from this process's L1 and from Redis
///   before it returns (a Redis failure is logged; the L2 entry then
///   expires by `l2_ttl`).
/// - [`get_or_load`](Self::get_or_load) does not store a result loaded
///   before an invalidation of its key that completed during the load, in
///   this process or any other (each invalidation bumps the key's
///   generation in Redis; the loaded view is stored only under the
///   generation it was loaded under), so a view read just before new events
///   cannot overwrite their invalidation.
/// - Redis failures are misses; the loader then serves.
///
/// Each key invalidated or read from Redis keeps a small generation key
/// there for `l2_ttl` (beside the value's own key).
///
/// Other processes' L1 entries are not invalidated remotely: with the LRU
/// and LFU policies they live until `ttl` passes without a read, so a view
/// read often in another instance stays there; use
/// [`EvictionPolicy::Ttl`](crate::EvictionPolicy::Ttl) to bound their age
/// from the write, for views read by several instances.
pub struct QueryCache<V> {
    inner: Arc<Inner<V>>,
}

struct Inner<V> {
    l1: Cache<String, V>,
    backend: Arc<RedisBackend>,
    config: CacheConfig,
    key_base: String,
    /// Where the keys' generations live.
    generation_base: String,
    /// Bumped by every invalidation.
    epoch: AtomicU64,
}

impl<V> Clone for QueryCache<V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V> std::fmt::Debug for QueryCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryCache")
            .field("key_base", &self.inner.key_base)
            .finish_non_exhaustive()
    }
}

impl<V> QueryCache<V>
where
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A cache named `name` (part of the Redis keys) with its own
    /// connections. No I/O; fails only on a malformed URL.
    pub fn new(name: &str, config: CacheConfig) -> Result<Self, RedisError> {
        let backend = RedisBackend::new("query_cache", &config.redis, &config.resilience)?;
        Ok(Self::with_backend(name, config, Arc::new(backend)))
    }

    /// A cache over a shared backend.
    pub fn with_backend(name: &str, config: CacheConfig, backend: Arc<RedisBackend>) -> Self {
        let key_base = format!("{}:query:{}:", config.key_prefix, name);
        let generation_base = format!("{}:query-generation:{}:", config.key_prefix, name);
        Self {
            inner: Arc::new(Inner {
                l1: l1::build(&config, CACHE),
                backend,
                config,
                key_base,
                generation_base,
                epoch: AtomicU64::new(0),
            }),
        }
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}{}", self.inner.key_base, key)
    }

    fn generation_key(&self, key: &str) -> String {
        format!("{}{}", self.inner.generation_base, key)
    }

    fn decode(&self, key: &str, json: &str) -> Option<V> {
        match serde_json::from_str(json) {
            Ok(v) => Some(v),
            Err(source) => {
                let e = RedisError::Codec {
                    direction: "decode",
                    key: self.redis_key(key),
                    source,
                };
                metrics::counter!(telemetry::ERRORS, "op" => "cache.get", "kind" => e.kind()).increment(1);
                tracing::warn!(error = %e, "cached view does not decode; treated as a miss");
                None
            }
        }
    }

    /// The cached value: L1, else L2 (filling L1), else `None`.
    pub async fn get(&self, key: &str) -> Option<V> {
        if let Some(v) = self.inner.l1.get(key) {
            telemetry::hit(CACHE, "l1");
            return Some(v);
        }
        telemetry::miss(CACHE, "l1");
        let epoch = self.inner.epoch.load(Ordering::Acquire);
        if let Some(v) = self.get_l2(key).await {
            telemetry::hit(CACHE, "l2");
            // Not if this process invalidated meanwhile (the value may
            // predate it).
            if self.inner.epoch.load(Ordering::Acquire) == epoch {
                self.inner.l1.insert(key.to_owned(), v.clone());
            }
            Some(v)
        } else {
            telemetry::miss(CACHE, "l2");
            None
        }
    }

    #[tracing::instrument(level = "debug", name = "es.redis.query_cache.l2_get", skip(self))]
    async fn get_l2(&self, key: &str) -> Option<V> {
        match l2::get(&self.inner.backend, &self.redis_key(key)).await {
            Ok(Some(json)) => self.decode(key, &json),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "L2 read failed; treated as a miss");
                None
            }
        }
    }

    /// Stores a value in both levels.
    #[tracing::instrument(level = "debug", name = "es.redis.query_cache.put", skip(self, value))]
    pub async fn put(&self, key: &str, value: &V) {
        self.inner.l1.insert(key.to_owned(), value.clone());
        let rkey = self.redis_key(key);
        match serde_json::to_string(value) {
            Ok(json) => {
                if let Err(e) = l2::set(&self.inner.backend, &rkey, &json, self.inner.config.l2_ttl).await {
                    tracing::debug!(error = %e, "L2 write failed");
                }
            }
            Err(source) => {
                let e = RedisError::Codec {
                    direction: "encode",
                    key: rkey,
                    source,
                };
                tracing::warn!(error = %e, "view does not serialize; kept in L1 only");
            }
        }
    }

    /// The cached value, or `load()`'s result, which is then cached (unless
    /// its key was invalidated meanwhile, here or in another process). A
    /// loader error is returned and nothing is cached.
    pub async fn get_or_load<E, F, Fut>(&self, key: &str, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.inner.l1.get(key) {
            telemetry::hit(CACHE, "l1");
            return Ok(v);
        }
        telemetry::miss(CACHE, "l1");
        // Taken before Redis is read: an invalidation in this process after
        // this point keeps what is read or loaded out of L1.
        let epoch = self.inner.epoch.load(Ordering::Acquire);
        let unchanged = || self.inner.epoch.load(Ordering::Acquire) == epoch;
        let (value_key, generation_key) = (self.redis_key(key), self.generation_key(key));
        let keys = Keys {
            value: &value_key,
            generation: &generation_key,
        };
        // The generation the load runs under; `None`: Redis did not answer.
        let generation = match generation::read(&self.inner.backend, &keys, self.inner.config.l2_ttl).await {
            Ok((Some(json), generation)) => match self.decode(key, &json) {
                Some(v) => {
                    telemetry::hit(CACHE, "l2");
                    if unchanged() {
                        self.inner.l1.insert(key.to_owned(), v.clone());
                    }
                    return Ok(v);
                }
                None => Some(generation),
            },
            Ok((None, generation)) => Some(generation),
            Err(e) => {
                tracing::debug!(error = %e, "L2 read failed; treated as a miss");
                None
            }
        };
        telemetry::miss(CACHE, "l2");
        let value = load().await?;
        if !unchanged() {
            tracing::debug!(key, "invalidated while loading; result not cached");
            return Ok(value);
        }
        let Some(generation) = generation else {
            // Redis is away: this process's level only.
            self.inner.l1.insert(key.to_owned(), value.clone());
            return Ok(value);
        };
        let stored = match serde_json::to_string(&value) {
            Ok(json) => {
                let ttl = self.inner.config.l2_ttl;
                match generation::put_if_current(&self.inner.backend, &keys, &generation, &json, ttl).await {
                    Ok(stored) => stored,
                    Err(e) => {
                        tracing::debug!(error = %e, "L2 write failed");
                        true
                    }
                }
            }
            Err(source) => {
                let e = RedisError::Codec {
                    direction: "encode",
                    key: value_key.clone(),
                    source,
                };
                tracing::warn!(error = %e, "view does not serialize; kept in L1 only");
                true
            }
        };
        if !stored {
            tracing::debug!(key, "invalidated elsewhere while loading; result not cached");
        } else if unchanged() {
            self.inner.l1.insert(key.to_owned(), value.clone());
        }
        Ok(value)
    }

    /// Drops keys from L1 and L2, and bumps their generations in Redis (so
    /// that loads under way anywhere do not store what they read).
    #[tracing::instrument(level = "debug", name = "es.redis.query_cache.invalidate", skip(self))]
    pub async fn invalidate(&self, keys: &[String]) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        for k in keys {
            self.inner.l1.invalidate(k);
        }
        let pairs: Vec<(String, String)> = keys
            .iter()
            .map(|k| (self.redis_key(k), self.generation_key(k)))
            .collect();
        if let Err(e) = generation::invalidate(&self.inner.backend, &pairs, self.inner.config.l2_ttl).await {
            tracing::warn!(error = %e, "L2 invalidation failed; entries expire by TTL");
        }
    }
}

/// A post-commit [`EventHandler`] that invalidates the query-cache keys a
/// commit affects, before the command's caller is answered (so the caller's
/// next query misses and reloads: read-your-writes).
///
/// `keys` maps a stream and its new events to the cache keys to drop.
///
/// ```no_run
/// # use es_redis::{InvalidateOnEvents, QueryCache};
/// # fn f<A: es_core::Aggregate>(views: QueryCache<serde_json::Value>) {
/// let handler = InvalidateOnEvents::<A, _, _>::new(views, |stream_id, _events| {
///     vec![format!("account-view:{stream_id}")]
/// });
/// // Repository::builder(store).handler(std::sync::Arc::new(handler))
/// # }
/// ```
pub struct InvalidateOnEvents<A, V, F> {
    cache: QueryCache<V>,
    keys: F,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A, V, F> InvalidateOnEvents<A, V, F>
where
    A: Aggregate,
    F: Fn(&StreamId, &[CommittedEvent<A::Event>]) -> Vec<String> + Send + Sync + 'static,
{
    /// Invalidates `keys(stream_id, events)` in `cache` after each commit.
    pub fn new(cache: QueryCache<V>, keys: F) -> Self {
        Self {
            cache,
            keys,
            _aggregate: PhantomData,
        }
    }
}

#[async_trait]
impl<A, V, F> EventHandler<A> for InvalidateOnEvents<A, V, F>
where
    A: Aggregate,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: Fn(&StreamId, &[CommittedEvent<A::Event>]) -> Vec<String> + Send + Sync + 'static,
{
    async fn on_committed(
        &self,
        stream_id: &StreamId,
        _state: &A,
        events: &[CommittedEvent<A::Event>],
    ) -> Result<(), BoxError> {
        let keys = (self.keys)(stream_id, events);
        self.cache.invalidate(&keys).await;
        Ok(())
    }
}
