//! The Lua scripts of the write-behind log. Each runs atomically in Redis
//! (one standalone Redis or one primary: the keys are built inside the
//! scripts, which Redis Cluster does not allow).
//!
//! Keys, under the configured prefix `P`:
//! - `P:v:<stream>` — the stream's version as admitted (or `diverged`).
//! - `P:p:<stream>` — hash: first version of a pending append -> its body.
//! - `P:q:<shard>` — list of pending appends, oldest first, as
//!   `<admitted ms>:<first version>:<stream>`.
//! - `P:r:<shard>` — the same entries while a flusher writes them (the
//!   reliable-queue "processing" list).
//! - `P:l:<shard>` — the flusher holding the shard's lists (expiring).
//! - `P:e:<event id>` — `<version>:<stream>` while pending, then for the
//!   id grace period.
//! - `P:f:<fence shard>` — the highest shard fence raised.
//! - `P:dead` — appends the store refused (diverged streams), as JSON.

use std::sync::OnceLock;

use redis::Script;

/// Admits a batch of appends. ARGV: prefix, now (ms), then per append:
/// stream, expected (`a` any, `n` no stream, `e` exists, or a version),
/// shard, fence shard (empty: unfenced), fence token, body, id count, ids.
/// Returns one reply per append: `{ok, first, last}`, `{replay, first,
/// last}`, `{conflict, current}`, `{dup, id, stream, version}`, `{fenced,
/// current}`, `{uninit}` (no version in Redis yet) or `{diverged}`.
const ADMIT: &str = r"
local P, now = ARGV[1], ARGV[2]
local function at(v)
  local sep = string.find(v, ':', 1, true)
  return tonumber(string.sub(v, 1, sep - 1)), string.sub(v, sep + 1)
end
local function accepts(exp, prior)
  return exp == 'a' or (exp == 'n' and prior == 0) or (exp == 'e' and prior > 0) or tonumber(exp) == prior
end
local out = {}
local i = 3
while i <= #ARGV do
  local sid, exp, shard, fshard, ftoken, body = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5]
  local n = tonumber(ARGV[i+6])
  local ids = i + 7
  i = ids + n
  local res
  local first = redis.call('GET', P .. ':e:' .. ARGV[ids])
  if first then
    local fv, fsid = at(first)
    local same = fsid == sid
    if same then
      for k = 1, n - 1 do
        if redis.call('GET', P .. ':e:' .. ARGV[ids + k]) ~= (fv + k) .. ':' .. sid then same = false break end
      end
    end
    if same and accepts(exp, fv - 1) then
      res = {'replay', fv, fv + n - 1}
    else
      res = {'dup', ARGV[ids], fsid, fv}
    end
  else
    for k = 1, n - 1 do
      local other = redis.call('GET', P .. ':e:' .. ARGV[ids + k])
      if other then
        local ov, osid = at(other)
        res = {'dup', ARGV[ids + k], osid, ov}
        break
      end
    end
  end
  if not res and fshard ~= '' then
    local f = tonumber(redis.call('GET', P .. ':f:' .. fshard) or '0')
    if f > tonumber(ftoken) then res = {'fenced', f} end
  end
  if not res then
    local vk = P .. ':v:' .. sid
    local cur = redis.call('GET', vk)
    if not cur then
      res = {'uninit'}
    elseif cur == 'diverged' then
      res = {'diverged'}
    else
      cur = tonumber(cur)
      if not accepts(exp, cur) then
        res = {'conflict', cur}
      else
        local fv = cur + 1
        redis.call('SET', vk, cur + n)
        redis.call('HSET', P .. ':p:' .. sid, fv, body)
        redis.call('RPUSH', P .. ':q:' .. shard, now .. ':' .. fv .. ':' .. sid)
        for k = 0, n - 1 do
          redis.call('SET', P .. ':e:' .. ARGV[ids + k], (fv + k) .. ':' .. sid)
        end
        res = {'ok', fv, fv + n - 1}
      end
    end
  end
  out[#out + 1] = res
end
return out
";

/// Records the version of streams Redis has no version of (never over one
/// it has): the store's, or past it the last version of the stream's
/// appends still pending here (the version key can be lost while they
/// are: evicted, deleted by hand), so an admission never takes a pending
/// append's versions again. ARGV: prefix, then stream, store version pairs.
const INIT: &str = r"
local P = ARGV[1]
for i = 2, #ARGV, 2 do
  local sid, v = ARGV[i], tonumber(ARGV[i + 1])
  local pending = redis.call('HGETALL', P .. ':p:' .. sid)
  for j = 1, #pending, 2 do
    local last = tonumber(pending[j]) + #cjson.decode(pending[j + 1]).e - 1
    if last > v then v = last end
  end
  redis.call('SET', P .. ':v:' .. sid, v, 'NX')
end
return 1
";

/// Raises a shard fence. ARGV: prefix, shard, token. Returns 0, or the
/// current fence when it is above the token (refused).
const RAISE_FENCE: &str = r"
local k = ARGV[1] .. ':f:' .. ARGV[2]
local f = tonumber(redis.call('GET', k) or '0')
if f > tonumber(ARGV[3]) then return f end
redis.call('SET', k, ARGV[3])
return 0
";

/// A flusher's round: per shard whose lease it holds or can take, renews
/// the lease and returns the processing list, refilled from the pending
/// list when empty. ARGV: prefix, owner, lease ms, max entries, shards.
/// Returns per held shard: `{shard, recovered, entries, bodies, still
/// pending, oldest pending entry}`.
const TAKE: &str = r"
local P, owner, lease, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV do
  local s = ARGV[i]
  local lk = P .. ':l:' .. s
  local holder = redis.call('GET', lk)
  if not holder then
    redis.call('SET', lk, owner, 'PX', lease)
  elseif holder == owner and redis.call('PTTL', lk) < tonumber(lease) / 2 then
    redis.call('PEXPIRE', lk, lease)
  end
  if not holder or holder == owner then
    local rk, qk = P .. ':r:' .. s, P .. ':q:' .. s
    local entries = redis.call('LRANGE', rk, 0, -1)
    local recovered = 1
    if #entries == 0 then
      recovered = 0
      entries = redis.call('LRANGE', qk, 0, max - 1)
      for j = 1, #entries, 500 do
        redis.call('RPUSH', rk, unpack(entries, j, math.min(j + 499, #entries)))
      end
      if #entries > 0 then redis.call('LTRIM', qk, #entries, -1) end
    end
    local bodies = {}
    for j, e in ipairs(entries) do
      local a = string.find(e, ':', 1, true)
      local b = string.find(e, ':', a + 1, true)
      bodies[j] = redis.call('HGET', P .. ':p:' .. string.sub(e, b + 1), string.sub(e, a + 1, b - 1)) or ''
    end
    out[#out + 1] = {tonumber(s), recovered, entries, bodies, redis.call('LLEN', qk), redis.call('LINDEX', qk, 0) or ''}
  end
end
return out
";

/// Ends a round: per shard still held whose processing list is still the
/// one the round took, drops those appends' bodies and the list; lets the
/// written ids expire after the grace period. A list that is not the
/// round's any more (a late copy of an acknowledgement already done, the
/// list since refilled by the next round) is left alone. ARGV: prefix,
/// owner, grace ms, shard count, then per shard: shard, entry count, the
/// entries it took; then the ids. Returns per shard 1 (acknowledged) or 0
/// (lease lost: left as is).
const ACK: &str = r"
local P, owner, grace, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
local i = 5
for _ = 1, n do
  local s, k = ARGV[i], tonumber(ARGV[i + 1])
  local first = i + 2
  i = first + k
  if redis.call('GET', P .. ':l:' .. s) == owner then
    local rk = P .. ':r:' .. s
    local held = redis.call('LRANGE', rk, 0, -1)
    local same = #held == k
    for j = 1, k do
      if not same then break end
      same = held[j] == ARGV[first + j - 1]
    end
    if same then
      for _, e in ipairs(held) do
        local a = string.find(e, ':', 1, true)
        local b = string.find(e, ':', a + 1, true)
        redis.call('HDEL', P .. ':p:' .. string.sub(e, b + 1), string.sub(e, a + 1, b - 1))
      end
      redis.call('DEL', rk)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
for j = i, #ARGV do
  redis.call('PEXPIRE', P .. ':e:' .. ARGV[j], grace)
end
return out
";

/// Records appends the store refused for good: pushes each to the dead
/// list and marks its stream diverged so no append is admitted after it.
/// ARGV: prefix, then stream, record pairs.
const DEAD: &str = r"
for i = 2, #ARGV, 2 do
  redis.call('RPUSH', ARGV[1] .. ':dead', ARGV[i + 1])
  redis.call('SET', ARGV[1] .. ':v:' .. ARGV[i], 'diverged')
end
return 1
";

/// Gives a flusher's leases up (on shutdown), so another flusher need not
/// wait for them to expire. ARGV: prefix, owner, shards.
const RELEASE: &str = r"
for i = 3, #ARGV do
  local lk = ARGV[1] .. ':l:' .. ARGV[i]
  if redis.call('GET', lk) == ARGV[2] then redis.call('DEL', lk) end
end
return 1
";

/// What waits in the shards a flusher holds (or that nobody holds: a
/// round hung on the store outlives its lease), read while its round is
/// busy (a store that hangs keeps the round from taking again). ARGV:
/// prefix, owner, shards. Returns per such shard: `{shard, appends in its
/// processing and pending lists, the oldest of them}`.
const BACKLOG: &str = r"
local P, owner = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  local s = ARGV[i]
  local holder = redis.call('GET', P .. ':l:' .. s)
  if (not holder) or holder == owner then
    local rk, qk = P .. ':r:' .. s, P .. ':q:' .. s
    local oldest = redis.call('LINDEX', rk, 0) or redis.call('LINDEX', qk, 0) or ''
    out[#out + 1] = {tonumber(s), redis.call('LLEN', rk) + redis.call('LLEN', qk), oldest}
  end
end
return out
";

/// The scripts, compiled once.
pub(crate) struct Scripts {
    pub(crate) admit: Script,
    pub(crate) init: Script,
    pub(crate) raise_fence: Script,
    pub(crate) take: Script,
    pub(crate) ack: Script,
    pub(crate) dead: Script,
    pub(crate) release: Script,
    pub(crate) backlog: Script,
}

pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        admit: Script::new(ADMIT),
        init: Script::new(INIT),
        raise_fence: Script::new(RAISE_FENCE),
        take: Script::new(TAKE),
        ack: Script::new(ACK),
        dead: Script::new(DEAD),
        release: Script::new(RELEASE),
        backlog: Script::new(BACKLOG),
    })
}
