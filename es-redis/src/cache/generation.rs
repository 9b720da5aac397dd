//! Generations of query-cache keys in Redis: an invalidation bumps a key's
//! generation, and a view loaded under one generation is stored only while
//! that generation is still current. So a view another process loaded just
//! before new events cannot land in Redis after their invalidation.

use std::sync::OnceLock;
use std::time::Duration;

use redis::Script;

use crate::backend::{Idempotency, RedisBackend};
use crate::error::RedisError;

/// Sets `KEYS[1]` to `ARGV[2]` (TTL `ARGV[3]` ms) only if the generation
/// `KEYS[2]` is still `ARGV[1]` (`""`: none yet). Returns 1 if written.
const PUT_IF_CURRENT: &str = r"
local g = redis.call('GET', KEYS[2])
if (g or '') ~= ARGV[1] then return 0 end
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

/// The value and the generation it is current under (`""`: never
/// invalidated, or long ago), in one round trip.
pub(crate) async fn read(backend: &RedisBackend, keys: &Keys<'_>) -> Result<(Option<String>, String), RedisError> {
    let (value, generation): (Option<String>, Option<String>) = backend
        .run("cache.get", Idempotency::Idempotent, |mut c| {
            let (v, g) = (keys.value.to_owned(), keys.generation.to_owned());
            async move { redis::cmd("MGET").arg(v).arg(g).query_async(&mut c).await }
        })
        .await?;
    Ok((value, generation.unwrap_or_default()))
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
