//! The Lua scripts of the shard protocol. Each runs atomically in Redis;
//! times are milliseconds since the Unix epoch, given by the caller's
//! clock.
//!
//! A shard record is a hash: `status`, `owner`, `token` (only ever
//! incremented), `lease` (expiry) and `target` (the instance a rebalance
//! hands it to).

use std::sync::OnceLock;

use redis::Script;

/// Takes a shard that has no live owner: bumps its token, records the new
/// owner and lease. Returns the token, or 0 when a live lease holds it.
/// KEYS: shard. ARGV: instance, now, ttl.
const ACQUIRE: &str = r"
local h = redis.call('HMGET', KEYS[1], 'status', 'lease')
local status, lease = h[1] or 'Available', tonumber(h[2] or '0')
if (status == 'Assigned' or status == 'Rebalancing') and lease > tonumber(ARGV[2]) then
  return 0
end
local token = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('HSET', KEYS[1], 'status', 'Assigned', 'owner', ARGV[1],
  'lease', tonumber(ARGV[2]) + tonumber(ARGV[3]), 'target', '')
return token
";

/// Extends the leases of the shards an instance owns under the given
/// tokens. Per shard: 1 renewed, 2 renewed but to be handed over, 0 lost.
/// KEYS: shards. ARGV: instance, now, ttl, then one token per shard.
const RENEW: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local h = redis.call('HMGET', key, 'status', 'owner', 'token')
  if h[2] == ARGV[1] and h[3] == ARGV[3 + i] and (h[1] == 'Assigned' or h[1] == 'Rebalancing') then
    redis.call('HSET', key, 'lease', tonumber(ARGV[2]) + tonumber(ARGV[3]))
    if h[1] == 'Rebalancing' then out[i] = 2 else out[i] = 1 end
  else
    out[i] = 0
  end
end
return out
";

/// Gives a shard up (keeping its token and rebalance target, recording
/// when). Returns 1, or 0 when the caller no longer owns it under that
/// token.
/// KEYS: shard. ARGV: instance, token, now.
const RELEASE: &str = r"
local h = redis.call('HMGET', KEYS[1], 'owner', 'token')
if h[1] == ARGV[1] and h[2] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'status', 'Available', 'owner', '', 'lease', 0, 'released', ARGV[3])
  return 1
end
return 0
";

/// Asks the owner of a shard to hand it to another instance. Returns 1, or
/// 0 when the shard changed since the rebalancer looked.
/// KEYS: shard. ARGV: owner, token, target.
const MARK_REBALANCING: &str = r"
local h = redis.call('HMGET', KEYS[1], 'status', 'owner', 'token')
if h[1] == 'Assigned' and h[2] == ARGV[1] and h[3] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'status', 'Rebalancing', 'target', ARGV[3])
  return 1
end
return 0
";

/// Raises a shard's token counter to at least a value (after the store
/// reported a fence above it, for example when Redis lost its data), so
/// the next acquisition gets a token above the fence.
/// KEYS: shard. ARGV: at least.
const RAISE_TOKEN: &str = r"
local t = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
if t < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'token', ARGV[1]) end
return 1
";

/// Deletes an instance's registration if it is still the one that lapsed
/// before the cutoff (a restarted or resumed instance registers again
/// meanwhile: that one stays). Returns 1 when deleted.
/// KEYS: instances. ARGV: instance, cutoff.
const PRUNE_INSTANCE: &str = r"
local json = redis.call('HGET', KEYS[1], ARGV[1])
if not json then return 0 end
local ok, record = pcall(cjson.decode, json)
if ok and type(record) == 'table' and tonumber(record['expires_at_ms'] or 0) >= tonumber(ARGV[2]) then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
";

/// The scripts, compiled once.
pub(crate) struct Scripts {
    pub(crate) acquire: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) mark_rebalancing: Script,
    pub(crate) raise_token: Script,
    pub(crate) prune_instance: Script,
}

pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        acquire: Script::new(ACQUIRE),
        renew: Script::new(RENEW),
        release: Script::new(RELEASE),
        mark_rebalancing: Script::new(MARK_REBALANCING),
        raise_token: Script::new(RAISE_TOKEN),
        prune_instance: Script::new(PRUNE_INSTANCE),
    })
}
