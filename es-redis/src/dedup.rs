//! [`RedisDeduplicator`]: idempotency keys shared by every process on one
//! Redis.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use es_core::{CommandDeduplicator, DedupClaim, DedupError, DedupStatus};
use redis::Script;
use serde_json::Value;

use crate::backend::{Idempotency, RedisBackend};
use crate::config::{DedupConfig, WhenUnavailable};
use crate::error::RedisError;
use crate::telemetry;

/// Claims a free key for `ARGV[1]` (in flight, `ARGV[2]` ms), or returns
/// what is stored. A repeat by the same claimant (a retried call) is
/// answered `S` again, so the call is safe to retry.
const BEGIN: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'I:' .. ARGV[1], 'NX', 'PX', ARGV[2])
  return 'S'
end
if v == 'I:' .. ARGV[1] then return 'S' end
return v
";

/// Stores the outcome `ARGV[2]` (`C:<json>`, `ARGV[3]` ms) while the key
/// is free or `ARGV[1]`'s in-flight mark; answers 1 without a change when
/// it holds this very outcome already (a retried call), and 0, changing
/// nothing, when another mark or outcome holds it.
const COMPLETE: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[2] then return 1 end
if (not v) or v == 'I:' .. ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Deletes the key only while it is `ARGV[1]`'s in-flight mark.
const ABANDON: &str = r"
if redis.call('GET', KEYS[1]) == 'I:' .. ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Sets the TTL of `ARGV[1]`'s in-flight mark to `ARGV[2]` ms again;
/// 1 if the mark was there, 0 otherwise.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == 'I:' .. ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

fn script(cell: &'static OnceLock<Script>, src: &str) -> &'static Script {
    cell.get_or_init(|| Script::new(src))
}

static BEGIN_SCRIPT: OnceLock<Script> = OnceLock::new();
static COMPLETE_SCRIPT: OnceLock<Script> = OnceLock::new();
static ABANDON_SCRIPT: OnceLock<Script> = OnceLock::new();
static RENEW_SCRIPT: OnceLock<Script> = OnceLock::new();

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Why [`RedisDeduplicator::run`] did not return an outcome.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E: std::error::Error + 'static> {
    /// De-duplication refused (Redis down and fail-closed, or still in
    /// progress after waiting). The command did not run. (When only
    /// storing the outcome fails, the command ran: `run` answers `Ok`.)
    #[error(transparent)]
    Dedup(#[from] DedupError),
    /// The command ran and failed; the key was released for a retry.
    #[error("command failed: {0}")]
    Command(#[source] E),
}

/// es-core's [`CommandDeduplicator`] on Redis.
///
/// Protocol: `begin` atomically claims the key (`SET NX PX` inside a Lua
/// script, value `I:<claimant>`, TTL `in_flight_ttl`); exactly one caller
/// among concurrent ones gets [`DedupStatus::Started`], the claimant being
/// its [`DedupClaim`]. `complete` replaces the claimant's mark (or a key
/// whose mark expired unclaimed) with `C:<outcome json>` for `window`; a
/// later `begin` returns [`DedupStatus::Completed`] with it. `abandon`
/// deletes the claimant's in-flight mark (never a completed outcome, never
/// another claimant's mark) so a failed command can be retried. A mark
/// whose owner died expires after `in_flight_ttl`. `complete` with
/// exactly the stored outcome succeeds and changes nothing (that is how a
/// retried call is recognised); with any other over a completed key it is
/// [`DedupError::ClaimLost`].
///
/// **Redis down**: with [`WhenUnavailable::FailClosed`] (default) every
/// call returns [`DedupError::Unavailable`] and the caller must not run the
/// command (a repeat could not be recognised); with `FailOpen`, `begin`
/// answers `Started` and `complete`/`abandon` succeed silently (logged and
/// counted). Either way the circuit breaker keeps refusals fast.
///
/// For end-to-end exactly-once also set `CommandContext::command_id`: the
/// event store then recognises a repeat even if the outcome was never
/// stored here (crash between commit and `complete`).
#[derive(Clone)]
pub struct RedisDeduplicator {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<RedisBackend>,
    config: DedupConfig,
}

impl std::fmt::Debug for RedisDeduplicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDeduplicator")
            .field("window", &self.inner.config.window)
            .field("when_unavailable", &self.inner.config.when_unavailable)
            .finish_non_exhaustive()
    }
}

impl RedisDeduplicator {
    /// A de-duplicator with its own connections. No I/O; fails only on a
    /// malformed URL.
    pub fn new(config: DedupConfig) -> Result<Self, RedisError> {
        let backend = RedisBackend::new("dedup", &config.redis, &config.resilience)?;
        Ok(Self::with_backend(config, Arc::new(backend)))
    }

    /// A de-duplicator over a shared backend.
    pub fn with_backend(config: DedupConfig, backend: Arc<RedisBackend>) -> Self {
        Self {
            inner: Arc::new(Inner { backend, config }),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:dedup:{}", self.inner.config.key_prefix, key)
    }

    /// Maps a Redis failure by the configured mode: `Ok(fallback)` when
    /// failing open, `Err(Unavailable)` when failing closed.
    fn unavailable<T>(&self, operation: &'static str, e: RedisError, fallback: T) -> Result<T, DedupError> {
        match self.inner.config.when_unavailable {
            WhenUnavailable::FailOpen => {
                metrics::counter!(telemetry::DEDUP, "outcome" => "fail_open").increment(1);
                tracing::warn!(operation, error = %e, "de-duplication unavailable; failing open");
                Ok(fallback)
            }
            WhenUnavailable::FailClosed => {
                metrics::counter!(telemetry::DEDUP, "outcome" => "fail_closed").increment(1);
                tracing::warn!(operation, error = %e, "de-duplication unavailable; failing closed");
                Err(DedupError::Unavailable {
                    operation,
                    source: Box::new(e),
                })
            }
        }
    }

    /// Runs `command` at most once per `key` within the window: the first
    /// caller runs it and stores its outcome; repeats get the stored
    /// outcome (waiting up to `wait` while the first is in flight). A
    /// failed command releases the key for a retry.
    pub async fn run<F, Fut, E>(&self, key: &str, wait: Duration, command: F) -> Result<Value, RunError<E>>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Value, E>> + Send,
        E: std::error::Error + Send + 'static,
    {
        match self.begin_or_wait(key, wait).await? {
            DedupStatus::Completed(outcome) => Ok(outcome),
            DedupStatus::InProgress => Err(RunError::Dedup(DedupError::InProgress { key: key.to_owned() })),
            DedupStatus::Started(claim) => match command().await {
                Ok(outcome) => {
                    // The command ran: its outcome is the answer even if it
                    // cannot be stored (a retry then waits for the in-flight
                    // mark to expire, and pass a command id to the
                    // repository so that it cannot apply twice).
                    match self.complete(key, &claim, &outcome).await {
                        Ok(()) => {}
                        Err(e @ DedupError::ClaimLost { .. }) => {
                            tracing::warn!(key, error = %e, "the outcome was not stored: another request took the key and its mark or outcome stands");
                        }
                        Err(e) => {
                            tracing::warn!(key, error = %e, "the outcome could not be stored; the key stays in flight until its TTL");
                        }
                    }
                    Ok(outcome)
                }
                Err(e) => {
                    if let Err(abandon) = self.abandon(key, &claim).await {
                        tracing::warn!(key, error = %abandon, "cannot release key; it expires with the in-flight TTL");
                    }
                    Err(RunError::Command(e))
                }
            },
        }
    }
}

#[async_trait]
impl CommandDeduplicator for RedisDeduplicator {
    /// Pings Redis. Failing open, the de-duplicator still serves without
    /// Redis (keys are then not recognised), so only a de-duplicator that
    /// fails closed reports it.
    #[tracing::instrument(level = "debug", name = "es.redis.dedup.check", skip(self))]
    async fn check(&self) -> Result<(), DedupError> {
        let reply: Result<String, RedisError> = self
            .inner
            .backend
            .run("dedup.check", Idempotency::Idempotent, |mut c| async move {
                redis::cmd("PING").query_async(&mut c).await
            })
            .await;
        match (reply, &self.inner.config.when_unavailable) {
            (Ok(_), _) | (Err(_), WhenUnavailable::FailOpen) => Ok(()),
            (Err(e), WhenUnavailable::FailClosed) => Err(DedupError::Unavailable {
                operation: "check",
                source: Box::new(e),
            }),
        }
    }

    #[tracing::instrument(level = "debug", name = "es.redis.dedup.begin", skip(self))]
    async fn begin(&self, key: &str) -> Result<DedupStatus, DedupError> {
        let rkey = self.key(key);
        let claim = DedupClaim::new();
        let ttl = millis(self.inner.config.in_flight_ttl);
        let reply: Result<String, RedisError> = self
            .inner
            .backend
            .run("dedup.begin", Idempotency::Idempotent, |mut c| {
                let mut inv = script(&BEGIN_SCRIPT, BEGIN).prepare_invoke();
                inv.key(&rkey).arg(claim.as_str()).arg(ttl);
                async move { inv.invoke_async(&mut c).await }
            })
            .await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => return self.unavailable("begin", e, DedupStatus::Started(claim)),
        };
        let status = if reply == "S" {
            DedupStatus::Started(claim)
        } else if reply.starts_with("I:") {
            DedupStatus::InProgress
        } else if let Some(json) = reply.strip_prefix("C:") {
            match serde_json::from_str(json) {
                Ok(v) => DedupStatus::Completed(v),
                Err(source) => {
                    let e = RedisError::Codec {
                        direction: "decode",
                        key: rkey,
                        source,
                    };
                    return Err(DedupError::Unavailable {
                        operation: "begin",
                        source: Box::new(e),
                    });
                }
            }
        } else {
            let e = RedisError::Protocol {
                operation: "dedup.begin",
                detail: format!("unexpected value under {rkey}"),
            };
            return Err(DedupError::Unavailable {
                operation: "begin",
                source: Box::new(e),
            });
        };
        let label = match status {
            DedupStatus::Started(_) => "started",
            DedupStatus::InProgress => "in_progress",
            DedupStatus::Completed(_) => "completed",
        };
        metrics::counter!(telemetry::DEDUP, "outcome" => label).increment(1);
        Ok(status)
    }

    #[tracing::instrument(level = "debug", name = "es.redis.dedup.complete", skip(self, outcome))]
    async fn complete(&self, key: &str, claim: &DedupClaim, outcome: &Value) -> Result<(), DedupError> {
        let rkey = self.key(key);
        let value = format!("C:{outcome}");
        let ttl = millis(self.inner.config.window);
        let result: Result<i64, RedisError> = self
            .inner
            .backend
            .run("dedup.complete", Idempotency::Idempotent, |mut c| {
                let mut inv = script(&COMPLETE_SCRIPT, COMPLETE).prepare_invoke();
                inv.key(&rkey).arg(claim.as_str()).arg(&value).arg(ttl);
                async move { inv.invoke_async(&mut c).await }
            })
            .await;
        match result {
            Ok(0) => Err(DedupError::ClaimLost { key: key.to_owned() }),
            Ok(_) => Ok(()),
            Err(e) => self.unavailable("complete", e, ()),
        }
    }

    #[tracing::instrument(level = "debug", name = "es.redis.dedup.abandon", skip(self))]
    async fn abandon(&self, key: &str, claim: &DedupClaim) -> Result<(), DedupError> {
        let rkey = self.key(key);
        let result: Result<i64, RedisError> = self
            .inner
            .backend
            .run("dedup.abandon", Idempotency::Idempotent, |mut c| {
                let mut inv = script(&ABANDON_SCRIPT, ABANDON).prepare_invoke();
                inv.key(&rkey).arg(claim.as_str());
                async move { inv.invoke_async(&mut c).await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => self.unavailable("abandon", e, ()),
        }
    }

    #[tracing::instrument(level = "debug", name = "es.redis.dedup.renew", skip(self))]
    async fn renew(&self, key: &str, claim: &DedupClaim) -> Result<bool, DedupError> {
        let rkey = self.key(key);
        let ttl = millis(self.inner.config.in_flight_ttl);
        let result: Result<i64, RedisError> = self
            .inner
            .backend
            .run("dedup.renew", Idempotency::Idempotent, |mut c| {
                let mut inv = script(&RENEW_SCRIPT, RENEW).prepare_invoke();
                inv.key(&rkey).arg(claim.as_str()).arg(ttl);
                async move { inv.invoke_async(&mut c).await }
            })
            .await;
        match result {
            Ok(n) => Ok(n == 1),
            // Unreachable: the mark keeps the time it has.
            Err(e) => self.unavailable("renew", e, true),
        }
    }
}
