//! Generations of query-cache keys in Redis: an invalidation bumps a key's
//! generation, and a view loaded under one generation is stored only while
//! that generation is still current. So a view another process loaded just
//! before new events cannot land in Redis after their invalidation.
//!
//! A generation key lives `ttl` after its last read or bump. A read that
//! finds none starts one at Redis's clock in microseconds (far above any
//! count of bumps, so a generation that lapsed and started again cannot
//! come back to a value a load in progress holds); a put whose generation
//! key is gone is refused.

use std::sync::OnceLock;
use std::time::Duration;

use redis::Script;

use crate::backend::{Idempotency, RedisBackend};
use crate::error::RedisError;

/// Returns `{value or false, generation}` of `KEYS[1]`, starting the
/// generation `KEYS[2]` when there is none; the generation then lives
/// `ARGV[1]` ms.
const READ: &str = r"
local g = redis.call('GET', KEYS[2])
if not g then
  local t = redis.call('TIME')
  g = t[1] .. string.format('%06d', tonumber(t[2]))
end
redis.call('SET', KEYS[2], g, 'PX', ARGV[1])
return {redis.call('GET', KEYS[1]), g}
";

/// Sets `KEYS[1]` to `ARGV[2]` (TTL `ARGV[3]` ms) only if the generation
/// `KEYS[2]` is still `ARGV[1]`. Returns 1 if written.
const PUT_IF_CURRENT: &str = r"
local g = redis.call('GET', KEYS[2])
if g ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// For each pair of keys (value, generation): deletes the value, bumps the
/// generation and gives it a TTL of `ARGV[1]` ms.
const INVALIDATE: &str = r"
for i = 1, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  redis.call('INCR', KEYS[i + 1])
  redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
end
return 1
";

fn read_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(READ))
}

fn put_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(PUT_IF_CURRENT))
}

fn invalidate_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(INVALIDATE))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A value key and the key of its generation.
pub(crate) struct Keys<'a> {
    pub(crate) value: &'a str,
    pub(crate) generation: &'a str,
}

/// The value and the generation it is current under (started if there was
/// none; it then lives `ttl`), in one round trip.
pub(crate) async fn read(
    backend: &RedisBackend,
    keys: &Keys<'_>,
    ttl: Duration,
) -> Result<(Option<String>, String), RedisError> {
    let ttl_ms = millis(ttl);
    backend
        .run("cache.get", Idempotency::Idempotent, |mut c| {
            let mut inv = read_script().prepare_invoke();
            inv.key(keys.value).key(keys.generation).arg(ttl_ms);
            async move { inv.invoke_async(&mut c).await }
        })
        .await
}

/// Stores `json` unless the key was invalidated since `generation` was
/// read; `true` if stored.
pub(crate) async fn put_if_current(
    backend: &RedisBackend,
    keys: &Keys<'_>,
    generation: &str,
    json: &str,
    ttl: Duration,
) -> Result<bool, RedisError> {
    let ttl_ms = millis(ttl);
    let written: i64 = backend
        .run("cache.put", Idempotency::Idempotent, |mut c| {
            let mut inv = put_script().prepare_invoke();
            inv.key(keys.value)
                .key(keys.generation)
                .arg(generation)
                .arg(json)
                .arg(ttl_ms);
            async move { inv.invoke_async(&mut c).await }
        })
        .await?;
    Ok(written == 1)
}

/// Deletes the values and bumps their generations, which then live for
/// `ttl` (longer than any load should take).
pub(crate) async fn invalidate(
    backend: &RedisBackend,
    pairs: &[(String, String)],
    ttl: Duration,
) -> Result<(), RedisError> {
    if pairs.is_empty() {
        return Ok(());
    }
    let ttl_ms = millis(ttl);
    backend
        .run("cache.invalidate", Idempotency::Idempotent, |mut c| {
            let mut inv = invalidate_script().prepare_invoke();
            for (value, generation) in pairs {
                inv.key(value).key(generation);
            }
            inv.arg(ttl_ms);
            async move { inv.invoke_async::<i64>(&mut c).await }
        })
        .await?;
    Ok(())
}
