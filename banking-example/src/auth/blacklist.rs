//! Revoked access tokens by `jti`, kept until the token would have
//! expired anyway: in memory, or in Redis (shared by every instance) when
//! `REDIS_URL` is set.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::AuthStoreError;
use crate::rate_limit::bounded_redis_call;

/// The token blacklist.
#[async_trait]
pub trait TokenBlacklist: Send + Sync + 'static {
    /// Revokes `jti` until `until` (the token's expiry).
    async fn revoke(&self, jti: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthStoreError>;
    /// Whether `jti` is revoked.
    async fn is_revoked(&self, jti: &str, now: DateTime<Utc>) -> Result<bool, AuthStoreError>;
    /// Backend name for the readiness report.
    fn name(&self) -> &'static str;
}

/// The blacklist in process memory (expired entries are dropped as new
/// ones come in).
#[derive(Debug, Default)]
pub struct InMemoryBlacklist {
    revoked: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl InMemoryBlacklist {
    /// An empty blacklist.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TokenBlacklist for InMemoryBlacklist {
    async fn revoke(&self, jti: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthStoreError> {
        let mut revoked = self.revoked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        revoked.retain(|_, until| *until > now);
        revoked.insert(jti.to_owned(), until);
        Ok(())
    }

    async fn is_revoked(&self, jti: &str, now: DateTime<Utc>) -> Result<bool, AuthStoreError> {
        let revoked = self.revoked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(revoked.get(jti).is_some_and(|until| *until > now))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

/// The blacklist in Redis: `SET <prefix><jti> 1 EX <seconds left>`.
#[derive(Clone)]
pub struct RedisBlacklist {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisBlacklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBlacklist")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBlacklist {
    /// Connects to `url`; keys are `<prefix><jti>`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            conn: crate::rate_limit::connect_redis(url).await?,
            prefix: prefix.to_owned(),
        })
    }
}

fn redis_err(e: redis::RedisError) -> AuthStoreError {
    AuthStoreError::Backend(format!("redis: {e}"))
}

#[async_trait]
impl TokenBlacklist for RedisBlacklist {
    async fn revoke(&self, jti: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthStoreError> {
        let secs = (until - now).num_seconds();
        if secs <= 0 {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        bounded_redis_call(conn.set_ex::<_, _, ()>(format!("{}{jti}", self.prefix), 1, secs.unsigned_abs()))
            .await
            .map_err(redis_err)
    }

    async fn is_revoked(&self, jti: &str, _now: DateTime<Utc>) -> Result<bool, AuthStoreError> {
        let mut conn = self.conn.clone();
        bounded_redis_call(conn.exists(format!("{}{jti}", self.prefix)))
            .await
            .map_err(redis_err)
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
