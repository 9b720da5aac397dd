//! Revoked access tokens, kept until the tokens would have expired
//! anyway: in Redis (shared by every instance) when `REDIS_URL` is set;
//! otherwise in memory, written through to the database when there is one
//! (the SQLite file or PostgreSQL, [`PersistentBlacklist`]) so that a
//! restart forgets no revocation. Three kinds of entry, all checked on
//! every request:
//!
//! - a token (`jti`): logout of that token;
//! - a session (`sid`, the refresh-token family): logout, refresh-token
//!   reuse and password changes end every access token of a session, not
//!   only the one presented;
//! - a user's "valid after" time: after a password change or reset, every
//!   token of the user issued before it is refused (but the session that
//!   changed the password, if kept).

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::AuthStoreError;
use crate::rate_limit::bounded_redis_call;

/// What the blacklist checks of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRef {
    /// Token id.
    pub jti: Uuid,
    /// Session id.
    pub sid: Uuid,
    /// The user.
    pub user_id: Uuid,
    /// Issued at (seconds since the epoch).
    pub issued_at: i64,
}

/// A user's "valid after" entry: tokens issued before `after` (seconds)
/// are refused, except those of session `keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidAfter {
    /// Tokens with `iat` before this (seconds since the epoch) are refused.
    pub after: i64,
    /// A session exempted (the one that changed the password).
    pub keep: Option<Uuid>,
}

impl ValidAfter {
    fn refuses(&self, t: &TokenRef) -> bool {
        t.issued_at < self.after && self.keep != Some(t.sid)
    }

    fn encode(&self) -> String {
        match self.keep {
            Some(k) => format!("{}:{k}", self.after),
            None => self.after.to_string(),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let (after, keep) = match s.split_once(':') {
            Some((a, k)) => (a, Some(Uuid::parse_str(k).ok()?)),
            None => (s, None),
        };
        Some(Self {
            after: after.parse().ok()?,
            keep,
        })
    }
}

/// The token blacklist.
#[async_trait]
pub trait TokenBlacklist: Send + Sync + 'static {
    /// Revokes `jti` until `until` (the token's expiry).
    async fn revoke(&self, jti: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthStoreError>;
    /// Whether `jti` is revoked.
    async fn is_revoked(&self, jti: &str, now: DateTime<Utc>) -> Result<bool, AuthStoreError>;
    /// Revokes every access token of session `sid` until `until` (the
    /// expiry of the newest token it may have).
    async fn revoke_session(&self, sid: Uuid, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthStoreError>;
    /// Refuses `user`'s tokens issued before `valid.after` (but those of
    /// `valid.keep`) until `until`.
    async fn set_valid_after(
        &self,
        user: Uuid,
        valid: ValidAfter,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthStoreError>;
    /// Whether the token is revoked in any of the three ways.
    async fn refuses(&self, token: &TokenRef, now: DateTime<Utc>) -> Result<bool, AuthStoreError>;
    /// Backend name for the readiness report.
    fn name(&self) -> &'static str;
}

#[derive(Debug, Default)]
struct Entries {
    tokens: HashMap<String, DateTime<Utc>>,
    sessions: HashMap<Uuid, DateTime<Utc>>,
    users: HashMap<Uuid, (ValidAfter, DateTime<Utc>)>,
}

impl Entries {
    fn sweep(&mut self, now: DateTime<Utc>) {
        self.tokens.retain(|_, until| *until > now);
        self.sessions.retain(|_, until| *until > now);
        self.users.retain(|_, (_, until)| *until > now);
    }
}

/// The blacklist in process memory (expired entries are dropped as new
/// ones come in; every entry lasts at most one access-token lifetime).
#[derive(Debug, Default)]
pub struct InMemoryBlacklist {
    revoked: Mutex<Entries>,
}

impl InMemoryBlacklist {
    /// An empty blacklist.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.revoked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `revocation` until `until`, dropping entries ended by `now`.
    fn remember(&self, revocation: Revocation, until: DateTime<Utc>, now: DateTime<Utc>) {
        let mut e = self.entries();
        e.sweep(now);
        match revocation {
            Revocation::Token(jti) => {
                e.tokens.insert(jti.to_string(), until);
            }
            Revocation::Session(sid) => {
                e.sessions.insert(sid, until);
            }
            Revocation::User(user, valid) => {
                e.users.insert(user, (valid, until));
            }
        }
    }
}

#[async_trait]
impl TokenBlacklist for InMemoryBlacklist {
    async fn revoke(&self, jti: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthStoreError> {
        let mut e = self.entries();
        e.sweep(now);
        e.tokens.insert(jti.to_owned(), until);
        Ok(())
    }

    async fn is_revoked(&self, jti: &str, now: DateTime<Utc>) -> Result<bool, AuthStoreError> {
        Ok(self.entries().tokens.get(jti).is_some_and(|until| *until > now))
    }

    async fn revoke_session(&self, sid: Uuid, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthStoreError> {
        self.remember(Revocation::Session(sid), until, now);
        Ok(())
    }

    async fn set_valid_after(
        &self,
        user: Uuid,
        valid: ValidAfter,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthStoreError> {
        self.remember(Revocation::User(user, valid), until, now);
        Ok(())
    }

    async fn refuses(&self, t: &TokenRef, now: DateTime<Utc>) -> Result<bool, AuthStoreError> {
        let e = self.entries();
        let live = |until: &DateTime<Utc>| *until > now;
        Ok(e.tokens.get(&t.jti.to_string()).is_some_and(live)
            || e.sessions.get(&t.sid).is_some_and(live)
            || e.users
                .get(&t.user_id)
                .is_some_and(|(v, until)| live(until) && v.refuses(t)))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

/// One revocation, as a database keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// A token (`jti`).
    Token(Uuid),
    /// Every token of a session.
    Session(Uuid),
    /// A user's tokens issued before a time.
    User(Uuid, ValidAfter),
}

impl Revocation {
    /// Its kind and id, the row's key: `("token", jti)`, `("session",
    /// sid)` or `("user", user id)`.
    pub fn key(&self) -> (&'static str, Uuid) {
        match self {
            Self::Token(jti) => ("token", *jti),
            Self::Session(sid) => ("session", *sid),
            Self::User(user, _) => ("user", *user),
        }
    }

    /// The user entry's "valid after", encoded (`None` for the others).
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::User(_, valid) => Some(valid.encode()),
            _ => None,
        }
    }

    /// The revocation a row holds; `None` for a row it cannot read.
    pub fn from_row(kind: &str, id: Uuid, detail: Option<&str>) -> Option<Self> {
        match kind {
            "token" => Some(Self::Token(id)),
            "session" => Some(Self::Session(id)),
            "user" => Some(Self::User(id, ValidAfter::decode(detail?)?)),
            _ => None,
        }
    }
}

/// Where [`PersistentBlacklist`] writes its entries (a table of the auth
/// store).
#[async_trait]
pub trait RevocationLog: Send + Sync + 'static {
    /// Keeps `revocation` until `until` (replacing an entry of the same
    /// key); drops entries that ended before `now`.
    async fn record(
        &self,
        revocation: Revocation,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthStoreError>;
    /// The entries that have not ended at `now`.
    async fn live(&self, now: DateTime<Utc>) -> Result<Vec<(Revocation, DateTime<Utc>)>, AuthStoreError>;
}

/// The blacklist in memory, written through to a [`RevocationLog`] and
/// read back from it once, on first use after a start: every check is
/// answered from memory, and a restart forgets no revocation. (Several
/// instances without Redis each see their own revocations, and the
/// others' after a restart; Redis shares them at once.)
pub struct PersistentBlacklist {
    memory: InMemoryBlacklist,
    log: std::sync::Arc<dyn RevocationLog>,
    loaded: tokio::sync::OnceCell<()>,
    name: &'static str,
}

impl std::fmt::Debug for PersistentBlacklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentBlacklist")
            .field("backend", &self.name)
            .finish_non_exhaustive()
    }
}

impl PersistentBlacklist {
    /// A blacklist over `log`, named `name` in the readiness report.
    pub fn new(log: std::sync::Arc<dyn RevocationLog>, name: &'static str) -> Self {
        Self {
            memory: InMemoryBlacklist::new(),
            log,
            loaded: tokio::sync::OnceCell::new(),
            name,
        }
    }

    /// Reads the log's live entries into memory, once (again after a
    /// failure).
    async fn loaded(&self, now: DateTime<Utc>) -> Result<(), AuthStoreError> {
        self.loaded
            .get_or_try_init(|| async {
                for (revocation, until) in self.log.live(now).await? {
                    self.memory.remember(revocation, until, now);
                }
                Ok::<(), AuthStoreError>(())
            })
            .await
            .copied()
    }

    async fn keep(
        &self,
        revocation: Revocation,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthStoreError> {
        self.loaded(now).await?;
        self.log.record(revocation, until, now).await?;
        self.memory.remember(revocation, until, now);
        Ok(())
    }
}

#[async_trait]
impl TokenBlacklist for PersistentBlacklist {
    async fn revoke(&self, jti: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthStoreError> {
        match Uuid::parse_str(jti) {
            Ok(id) => self.keep(Revocation::Token(id), until, now).await,
            // Not a token this server issued: nothing to persist.
            Err(_) => self.memory.revoke(jti, until, now).await,
        }
    }

    async fn is_revoked(&self, jti: &str, now: DateTime<Utc>) -> Result<bool, AuthStoreError> {
        self.loaded(now).await?;
        self.memory.is_revoked(jti, now).await
    }

    async fn revoke_session(&self, sid: Uuid, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthStoreError> {
        self.keep(Revocation::Session(sid), until, now).await
    }

    async fn set_valid_after(
        &self,
        user: Uuid,
        valid: ValidAfter,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthStoreError> {
        self.keep(Revocation::User(user, valid), until, now).await
    }

    async fn refuses(&self, token: &TokenRef, now: DateTime<Utc>) -> Result<bool, AuthStoreError> {
        self.loaded(now).await?;
        self.memory.refuses(token, now).await
    }

    fn name(&self) -> &'static str {
        self.name
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

impl RedisBlacklist {
    async fn set_until(
        &self,
        key: String,
        value: String,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthStoreError> {
        let secs = (until - now).num_seconds();
        if secs <= 0 {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        bounded_redis_call(conn.set_ex::<_, _, ()>(key, value, secs.unsigned_abs()))
            .await
            .map_err(redis_err)
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

    async fn revoke_session(&self, sid: Uuid, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthStoreError> {
        self.set_until(format!("{}sid:{sid}", self.prefix), "1".into(), until, now)
            .await
    }

    async fn set_valid_after(
        &self,
        user: Uuid,
        valid: ValidAfter,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthStoreError> {
        self.set_until(format!("{}user:{user}", self.prefix), valid.encode(), until, now)
            .await
    }

    async fn refuses(&self, t: &TokenRef, _now: DateTime<Utc>) -> Result<bool, AuthStoreError> {
        let mut conn = self.conn.clone();
        let keys = [
            format!("{}{}", self.prefix, t.jti),
            format!("{}sid:{}", self.prefix, t.sid),
            format!("{}user:{}", self.prefix, t.user_id),
        ];
        // One round trip for the three entries.
        let values: Vec<Option<String>> = bounded_redis_call(conn.mget(&keys)).await.map_err(redis_err)?;
        let get = |i: usize| values.get(i).cloned().flatten();
        Ok(get(0).is_some()
            || get(1).is_some()
            || get(2)
                .and_then(|v| ValidAfter::decode(&v))
                .is_some_and(|v| v.refuses(t)))
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
