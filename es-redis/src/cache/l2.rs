//! The Redis level: versioned aggregate states (a put never replaces a
//! newer version, checked atomically in Redis), plain values, and the set
//! of recently written keys.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;

use crate::backend::{Idempotency, RedisBackend};
use crate::error::RedisError;

/// Writes `{v, s}` unless a newer `v` is stored; refreshes the TTL; records
/// the member in the bounded recent-keys sorted set. Returns 1 if written.
const PUT_VERSIONED: &str = r"
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local keep = tonumber(ARGV[4])
if keep > 0 then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -keep - 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
";

fn put_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(PUT_VERSIONED))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A versioned entry as stored: the version and the JSON state.
pub(crate) type RawVersioned = (u64, String);

/// Reads a versioned entry.
pub(crate) async fn get_versioned(backend: &RedisBackend, key: &str) -> Result<Option<RawVersioned>, RedisError> {
    let reply: (Option<u64>, Option<String>) = backend
        .run("cache.get", Idempotency::Idempotent, |mut c| {
            let key = key.to_owned();
            async move { redis::cmd("HMGET").arg(key).arg("v").arg("s").query_async(&mut c).await }
        })
        .await?;
    Ok(match reply {
        (Some(v), Some(s)) => Some((v, s)),
        _ => None,
    })
}

/// Where a versioned put also records its key as recently used.
pub(crate) struct Recent<'a> {
    pub(crate) key: &'a str,
    pub(crate) member: &'a str,
    pub(crate) keep: usize,
}

/// Writes a versioned entry unless a newer one is stored; `true` if
/// written. Idempotent (same version and state twice is one write).
pub(crate) async fn put_versioned(
    backend: &RedisBackend,
    key: &str,
    version: u64,
    json: &str,
    ttl: Duration,
    recent: Recent<'_>,
) -> Result<bool, RedisError> {
    let ttl_ms = millis(ttl);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let written: i64 = backend
        .run("cache.put", Idempotency::Idempotent, |mut c| {
            let mut inv = put_script().prepare_invoke();
            inv.key(key)
                .key(recent.key)
                .arg(version)
                .arg(json)
                .arg(ttl_ms)
                .arg(recent.keep)
                .arg(now_ms)
                .arg(recent.member);
            async move { inv.invoke_async(&mut c).await }
        })
        .await?;
    Ok(written == 1)
}

/// Reads a plain value.
pub(crate) async fn get(backend: &RedisBackend, key: &str) -> Result<Option<String>, RedisError> {
    backend
        .run("cache.get", Idempotency::Idempotent, |mut c| {
            let key = key.to_owned();
            async move { redis::cmd("GET").arg(key).query_async(&mut c).await }
        })
        .await
}

/// Writes a plain value with a TTL.
pub(crate) async fn set(backend: &RedisBackend, key: &str, json: &str, ttl: Duration) -> Result<(), RedisError> {
    let ttl_ms = millis(ttl);
    backend
        .run("cache.put", Idempotency::Idempotent, |mut c| {
            let (key, json) = (key.to_owned(), json.to_owned());
            async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(json)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await
            }
        })
        .await
}

/// Deletes keys.
pub(crate) async fn del(backend: &RedisBackend, keys: &[String]) -> Result<(), RedisError> {
    if keys.is_empty() {
        return Ok(());
    }
    backend
        .run("cache.invalidate", Idempotency::Idempotent, |mut c| {
            let keys = keys.to_vec();
            async move { redis::cmd("DEL").arg(keys).query_async::<()>(&mut c).await }
        })
        .await
}

/// The `limit` most recently written members, newest first.
pub(crate) async fn recent(backend: &RedisBackend, key: &str, limit: usize) -> Result<Vec<String>, RedisError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
    backend
        .run("cache.recent", Idempotency::Idempotent, |mut c| {
            let key = key.to_owned();
            async move {
                redis::cmd("ZREVRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(stop)
                    .query_async(&mut c)
                    .await
            }
        })
        .await
}
