//! [`RedisLockManager`]: es-core's [`LockManager`] on Redis, with fencing
//! tokens.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use es_core::{FencingToken, Lease, LockError, LockGuard, LockManager, LockRetry};
use redis::Script;
use uuid::Uuid;

use crate::backend::{Idempotency, RedisBackend};
use crate::config::LockConfig;
use crate::error::RedisError;
use crate::telemetry;

/// Takes `KEYS[1]` for owner `ARGV[1]` for `ARGV[2]` ms and returns a new
/// fencing token from the counter `KEYS[2]`; 0 when another owner holds it.
/// A repeat by the same owner (a retried call) returns its token again, so
/// the call is safe to retry. Lock and token are one atomic step, so token
/// order is acquisition order.
const ACQUIRE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner, token = string.match(cur, '^([^:]+):(%d+)$')
  if owner == ARGV[1] then return tonumber(token) end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token
";

/// Deletes the lock only if `ARGV[1]` owns it.
const RELEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Sets the TTL to `ARGV[2]` ms only if `ARGV[1]` owns the lock.
const EXTEND: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Raises the counter `KEYS[1]` to `ARGV[1]` when it is below; 1 if it was.
const RAISE: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
";

static ACQUIRE_SCRIPT: OnceLock<Script> = OnceLock::new();
static RAISE_SCRIPT: OnceLock<Script> = OnceLock::new();
static RELEASE_SCRIPT: OnceLock<Script> = OnceLock::new();
static EXTEND_SCRIPT: OnceLock<Script> = OnceLock::new();

fn script(cell: &'static OnceLock<Script>, src: &str) -> &'static Script {
    cell.get_or_init(|| Script::new(src))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn owner_str(owner: &Uuid) -> String {
    owner.simple().to_string()
}

/// Exclusive, expiring locks on Redis with fencing tokens.
///
/// Guarantees (on a single Redis primary):
/// - at most one unexpired lease per key (`SET NX PX` in a Lua script);
/// - only the owner (a random id per acquisition) can release or extend
///   (compare-and-delete / compare-and-expire in Lua);
/// - a lease whose holder stalls past its TTL expires, and the next
///   holder's **fencing token** is strictly larger (one `INCR` counter per
///   manager prefix, taken atomically with the lock), so a resource that
///   remembers the largest token it saw can refuse the stale holder.
///
/// Why tokens matter: a lock only bounds who acts *under normal timing*. A
/// GC pause or partition can let a holder act after its lease expired and
/// someone else took the lock. In this toolkit the event store's
/// optimistic concurrency is the final guard: every append names the exact
/// version it was decided on, so a stale holder's append conflicts instead
/// of overwriting. The token, recorded in event metadata by
/// [`LockedRepository`](crate::LockedRepository), makes such episodes
/// visible and lets other resources fence too.
///
/// The counter key `{lock_prefix}__fencing_token` never expires (tokens
/// must never restart); do not delete it while leases may be in use. If it
/// is lost all the same (a Redis restarted without persistence),
/// [`LockedRepository`](crate::LockedRepository) raises it past the token
/// it finds in the stream (`raise_tokens_past`) and takes the lock again.
///
/// Not Redlock: with Redis replication, a failover can lose a lock; the
/// store's concurrency check still keeps data correct.
#[derive(Clone)]
pub struct RedisLockManager {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<RedisBackend>,
    config: LockConfig,
    fence_key: String,
}

impl std::fmt::Debug for RedisLockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLockManager")
            .field("lock_prefix", &self.inner.config.lock_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLockManager {
    /// A manager with its own connections. No I/O; fails only on a
    /// malformed URL.
    pub fn new(config: LockConfig) -> Result<Self, RedisError> {
        let backend = RedisBackend::new("lock", &config.redis, &config.resilience)?;
        Ok(Self::with_backend(config, Arc::new(backend)))
    }

    /// A manager over a shared backend.
    pub fn with_backend(config: LockConfig, backend: Arc<RedisBackend>) -> Self {
        let fence_key = format!("{}__fencing_token", config.lock_prefix);
        Self {
            inner: Arc::new(Inner {
                backend,
                config,
                fence_key,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LockConfig {
        &self.inner.config
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.inner.config.lock_prefix, key)
    }

    fn retry(&self) -> LockRetry {
        LockRetry {
            attempts: self.inner.config.retry_attempts,
            delay: self.inner.config.retry_delay,
        }
    }

    fn backend_error(operation: &'static str, key: &str, e: RedisError) -> LockError {
        LockError::Backend {
            operation,
            key: key.to_owned(),
            source: Box::new(e),
        }
    }

    async fn owned_call(
        &self,
        op: &'static str,
        cell: &'static OnceLock<Script>,
        src: &str,
        lease: &Lease,
        ttl: Option<Duration>,
        idem: Idempotency,
    ) -> Result<bool, RedisError> {
        let rkey = self.key(&lease.key);
        let owner = owner_str(&lease.owner);
        let ttl = ttl.map(millis);
        let n: i64 = self
            .inner
            .backend
            .run(op, idem, |mut c| {
                let mut inv = script(cell, src).prepare_invoke();
                inv.key(&rkey).arg(&owner);
                if let Some(ttl) = ttl {
                    inv.arg(ttl);
                }
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Ok(n == 1)
    }
}

#[async_trait]
impl LockManager for RedisLockManager {
    #[tracing::instrument(level = "debug", name = "es.redis.lock.try_acquire", skip(self))]
    async fn try_acquire(&self, key: &str, ttl: Duration) -> Result<Option<LockGuard>, LockError> {
        let rkey = self.key(key);
        let owner = Uuid::new_v4();
        let owner_s = owner_str(&owner);
        let ttl_ms = millis(ttl);
        let token: i64 = self
            .inner
            .backend
            .run("lock.acquire", Idempotency::Idempotent, |mut c| {
                let mut inv = script(&ACQUIRE_SCRIPT, ACQUIRE).prepare_invoke();
                inv.key(&rkey).key(&self.inner.fence_key).arg(&owner_s).arg(ttl_ms);
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(|e| Self::backend_error("acquire", key, e))?;
        if token <= 0 {
            metrics::counter!(telemetry::LOCK, "outcome" => "contended").increment(1);
            return Ok(None);
        }
        metrics::counter!(telemetry::LOCK, "outcome" => "acquired").increment(1);
        let lease = Lease {
            key: key.to_owned(),
            owner,
            fencing_token: token.unsigned_abs(),
        };
        tracing::debug!(fencing_token = lease.fencing_token, "lock acquired");
        Ok(Some(LockGuard::new(lease, Arc::new(self.clone()))))
    }

    async fn acquire(&self, key: &str, ttl: Duration) -> Result<LockGuard, LockError> {
        self.retry().run(key, || self.try_acquire(key, ttl)).await
    }

    #[tracing::instrument(level = "debug", name = "es.redis.lock.release", skip_all, fields(key = %lease.key, fencing_token = lease.fencing_token))]
    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        // Not retried: a second attempt after a lost reply would report a
        // successful release as lost.
        let released = self
            .owned_call("lock.release", &RELEASE_SCRIPT, RELEASE, lease, None, Idempotency::Once)
            .await
            .map_err(|e| Self::backend_error("release", &lease.key, e))?;
        let outcome = if released { "released" } else { "lost" };
        metrics::counter!(telemetry::LOCK, "outcome" => outcome).increment(1);
        Ok(released)
    }

    #[tracing::instrument(level = "debug", name = "es.redis.lock.raise_tokens", skip(self))]
    async fn raise_tokens_past(&self, token: FencingToken) -> Result<bool, LockError> {
        let raised: i64 = self
            .inner
            .backend
            .run("lock.raise_tokens", Idempotency::Idempotent, |mut c| {
                let mut inv = script(&RAISE_SCRIPT, RAISE).prepare_invoke();
                inv.key(&self.inner.fence_key).arg(token);
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(|e| Self::backend_error("raise tokens", &self.inner.fence_key, e))?;
        if raised == 1 {
            tracing::warn!(
                token,
                "the fencing-token counter was behind a stored token (lost?); raised past it"
            );
        }
        Ok(raised == 1)
    }

    #[tracing::instrument(level = "debug", name = "es.redis.lock.extend", skip_all, fields(key = %lease.key, fencing_token = lease.fencing_token))]
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool, LockError> {
        let extended = self
            .owned_call(
                "lock.extend",
                &EXTEND_SCRIPT,
                EXTEND,
                lease,
                Some(ttl),
                Idempotency::Idempotent,
            )
            .await
            .map_err(|e| Self::backend_error("extend", &lease.key, e))?;
        let outcome = if extended { "extended" } else { "lost" };
        metrics::counter!(telemetry::LOCK, "outcome" => outcome).increment(1);
        Ok(extended)
    }
}
