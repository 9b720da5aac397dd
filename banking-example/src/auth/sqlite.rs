//! The auth tables in SQLite, in the application's database file: users,
//! refresh tokens, reset tokens, login failures and the reset mails.
//! [`SqliteAuthStore`] implements every auth store trait over one pool,
//! as [`super::pg::PgAuthStore`] does on PostgreSQL.
//!
//! SQLite has no UUID or timestamp type: ids are stored as hyphenated
//! TEXT, times as fixed-width ISO-8601 UTC TEXT with microseconds (the
//! precision PostgreSQL keeps), booleans as 0/1 and roles as a JSON array.
//! SQLite lets one writer in at a time, so every read-then-write (token
//! consumption, failure counting, the migration) runs in a
//! `BEGIN IMMEDIATE` transaction: it takes the write lock before reading,
//! so two connections (or two processes) on one file cannot both see a
//! token unused. Waiting for that lock is bounded by the busy timeout of
//! the pool's connections ([`SqliteAuthStore::connect_options`] sets one).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow};
use sqlx::Row;
use uuid::Uuid;

use super::blacklist::{Revocation, RevocationLog};
use super::lockout::{AttemptKey, Attempts, LockoutPolicy, LoginAttempts};
use super::rbac::Role;
use super::refresh::{RefreshRecord, RefreshStore};
use super::reset::{MailOutbox, QueuedReset, ResetRecord, ResetStore};
use super::users::{User, UserStore};
use super::AuthStoreError;

/// The migration creating the auth tables.
const MIGRATION: &str = include_str!("sqlite_schema.sql");

/// How long a connection of [`SqliteAuthStore::connect_options`] waits for
/// another writer before failing with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes the write lock at the start, so what the transaction reads cannot
/// change before it writes.
const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

fn db(e: sqlx::Error) -> AuthStoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => AuthStoreError::Duplicate,
        _ => AuthStoreError::Backend(format!("sqlite: {e}")),
    }
}

/// A stored value that does not decode (the file was written by something
/// else, or edited by hand).
fn corrupt(column: &str, detail: impl std::fmt::Display) -> AuthStoreError {
    AuthStoreError::Backend(format!("sqlite: {column} does not decode: {detail}"))
}

/// A time as stored: `2024-01-31T12:00:00.000000Z`.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(ts)
}

fn get_ts(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, AuthStoreError> {
    let text: String = row.try_get(column).map_err(db)?;
    parse_ts(column, &text)
}

fn get_opt_ts(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, AuthStoreError> {
    let text: Option<String> = row.try_get(column).map_err(db)?;
    text.map(|t| parse_ts(column, &t)).transpose()
}

fn parse_ts(column: &str, text: &str) -> Result<DateTime<Utc>, AuthStoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(column, format!("{text:?}: {e}")))
}

fn get_uuid(row: &SqliteRow, column: &str) -> Result<Uuid, AuthStoreError> {
    let text: String = row.try_get(column).map_err(db)?;
    Uuid::parse_str(&text).map_err(|e| corrupt(column, format!("{text:?}: {e}")))
}

fn get_failures(row: &SqliteRow) -> Result<u32, AuthStoreError> {
    let n: i64 = row.try_get("failures").map_err(db)?;
    Ok(u32::try_from(n).unwrap_or(0))
}

/// Every auth store on SQLite, in the `auth_*` tables of one database.
///
/// ```
/// use banking_example::auth::sqlite::SqliteAuthStore;
/// use banking_example::auth::users::{User, UserStore};
/// use banking_example::auth::Role;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::env::temp_dir().join(format!("auth-doc-{}.db", uuid::Uuid::new_v4()));
/// let pool = sqlx::SqlitePool::connect_with(SqliteAuthStore::connect_options(&path)).await?;
/// let store = SqliteAuthStore::new(pool.clone());
/// store.migrate().await?;
/// let ada = User {
///     id: uuid::Uuid::new_v4(),
///     username: "ada@example.com".into(),
///     password_hash: "$argon2id$...".into(),
///     roles: vec![Role::Customer],
///     created_at: chrono::Utc::now(),
/// };
/// store.create(ada.clone()).await?;
/// let found = store.by_username("ada@example.com").await?;
/// assert_eq!(found.map(|u| u.id), Some(ada.id));
/// pool.close().await;
/// # for suffix in ["", "-wal", "-shm"] {
/// #     let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
/// # }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteAuthStore {
    pool: SqlitePool,
}

impl SqliteAuthStore {
    /// The store on `pool` (the application's database; the tables are
    /// created by [`Self::migrate`]).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Options for a pool on the database file at `path`: created if
    /// missing, write-ahead log (readers do not block the writer),
    /// [`BUSY_TIMEOUT`] to wait for another writer.
    pub fn connect_options(path: impl AsRef<Path>) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Creates the tables if missing (idempotent; one writer at a time, so
    /// processes starting together do not collide).
    #[tracing::instrument(name = "auth.sqlite.migrate", level = "debug", skip_all)]
    pub async fn migrate(&self) -> Result<(), AuthStoreError> {
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await.map_err(db)?;
        sqlx::raw_sql(MIGRATION).execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }
}

/// Most rows one purge statement deletes (keeps each purge short).
const PURGE_BATCH: i64 = 1000;

fn attempts(row: &SqliteRow) -> Result<Attempts, AuthStoreError> {
    Ok(Attempts {
        failures: get_failures(row)?,
        locked_until: get_opt_ts(row, "locked_until")?,
    })
}

fn reset_record(token_hash: &str, row: &SqliteRow) -> Result<ResetRecord, AuthStoreError> {
    Ok(ResetRecord {
        token_hash: token_hash.to_owned(),
        user_id: get_uuid(row, "user_id")?,
        expires_at: get_ts(row, "expires_at")?,
        used_at: get_opt_ts(row, "used_at")?,
    })
}

fn user(row: &SqliteRow) -> Result<User, AuthStoreError> {
    let roles: String = row.try_get("roles").map_err(db)?;
    let roles: Vec<String> = serde_json::from_str(&roles).map_err(|e| corrupt("auth_users.roles", e))?;
    Ok(User {
        id: get_uuid(row, "id")?,
        username: row.try_get("username").map_err(db)?,
        password_hash: row.try_get("password_hash").map_err(db)?,
        roles: roles.iter().filter_map(|r| Role::parse(r)).collect(),
        created_at: get_ts(row, "created_at")?,
    })
}

fn role_names(roles: &[Role]) -> Result<String, AuthStoreError> {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    serde_json::to_string(&names).map_err(|e| AuthStoreError::Backend(format!("sqlite: roles: {e}")))
}

const USER_COLUMNS: &str = "id, username, password_hash, roles, created_at";

#[async_trait]
impl UserStore for SqliteAuthStore {
    #[tracing::instrument(name = "auth.sqlite.create_user", level = "debug", skip_all)]
    async fn create(&self, u: User) -> Result<(), AuthStoreError> {
        sqlx::query(&format!(
            "INSERT INTO auth_users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
        ))
        .bind(u.id.to_string())
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(role_names(&u.roles)?)
        .bind(ts(u.created_at))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.user_by_username", level = "debug", skip_all)]
    async fn by_username(&self, username: &str) -> Result<Option<User>, AuthStoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM auth_users WHERE username = ?1");
        let row = sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(user).transpose()
    }

    #[tracing::instrument(name = "auth.sqlite.user_by_id", level = "debug", skip_all)]
    async fn by_id(&self, id: Uuid) -> Result<Option<User>, AuthStoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM auth_users WHERE id = ?1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(user).transpose()
    }

    #[tracing::instrument(name = "auth.sqlite.set_password", level = "debug", skip_all)]
    async fn set_password(&self, id: Uuid, password_hash: &str) -> Result<(), AuthStoreError> {
        let done = sqlx::query("UPDATE auth_users SET password_hash = ?2 WHERE id = ?1")
            .bind(id.to_string())
            .bind(password_hash)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(AuthStoreError::NotFound);
        }
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.set_roles", level = "debug", skip_all)]
    async fn set_roles(&self, id: Uuid, roles: &[Role]) -> Result<(), AuthStoreError> {
        let done = sqlx::query("UPDATE auth_users SET roles = ?2 WHERE id = ?1")
            .bind(id.to_string())
            .bind(role_names(roles)?)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(AuthStoreError::NotFound);
        }
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.list_users", level = "debug", skip_all)]
    async fn list(&self, offset: usize, limit: usize) -> Result<(Vec<User>, usize), AuthStoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM auth_users ORDER BY username LIMIT ?1 OFFSET ?2");
        let rows = sqlx::query(&sql)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM auth_users")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let users = rows.iter().map(user).collect::<Result<_, _>>()?;
        Ok((users, usize::try_from(total).unwrap_or(0)))
    }
}

#[async_trait]
impl RefreshStore for SqliteAuthStore {
    #[tracing::instrument(name = "auth.sqlite.insert_refresh", level = "debug", skip_all)]
    async fn insert(&self, r: RefreshRecord) -> Result<(), AuthStoreError> {
        sqlx::query(
            "INSERT INTO auth_refresh_tokens (token_hash, user_id, family_id, expires_at, used_at, revoked, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(&r.token_hash)
        .bind(r.user_id.to_string())
        .bind(r.family_id.to_string())
        .bind(ts(r.expires_at))
        .bind(opt_ts(r.used_at))
        .bind(r.revoked)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.consume_refresh", level = "debug", skip_all)]
    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<RefreshRecord>, AuthStoreError> {
        // The write lock is taken before the read: concurrent uses of one
        // token see each other, exactly one gets `used_at` NULL.
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await.map_err(db)?;
        let row = sqlx::query(
            "SELECT user_id, family_id, expires_at, used_at, revoked FROM auth_refresh_tokens WHERE token_hash = ?1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            tx.commit().await.map_err(db)?;
            return Ok(None);
        };
        let before = RefreshRecord {
            token_hash: token_hash.to_owned(),
            user_id: get_uuid(&row, "user_id")?,
            family_id: get_uuid(&row, "family_id")?,
            expires_at: get_ts(&row, "expires_at")?,
            used_at: get_opt_ts(&row, "used_at")?,
            revoked: row.try_get("revoked").map_err(db)?,
        };
        if before.used_at.is_none() {
            sqlx::query("UPDATE auth_refresh_tokens SET used_at = ?2 WHERE token_hash = ?1")
                .bind(token_hash)
                .bind(ts(now))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Some(before))
    }

    #[tracing::instrument(name = "auth.sqlite.revoke_family", level = "debug", skip_all)]
    async fn revoke_family(&self, family_id: Uuid) -> Result<(), AuthStoreError> {
        sqlx::query("UPDATE auth_refresh_tokens SET revoked = 1 WHERE family_id = ?1")
            .bind(family_id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.revoke_user", level = "debug", skip_all)]
    async fn revoke_user(&self, user_id: Uuid, keep: Option<Uuid>) -> Result<Vec<Uuid>, AuthStoreError> {
        let families: Vec<String> = sqlx::query_scalar(
            "UPDATE auth_refresh_tokens SET revoked = 1 WHERE user_id = ?1 \
             AND (?2 IS NULL OR family_id <> ?2) RETURNING family_id",
        )
        .bind(user_id.to_string())
        .bind(keep.map(|k| k.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut families: Vec<Uuid> = families.iter().filter_map(|f| Uuid::parse_str(f).ok()).collect();
        families.sort_unstable();
        families.dedup();
        Ok(families)
    }
}

#[async_trait]
impl ResetStore for SqliteAuthStore {
    #[tracing::instrument(name = "auth.sqlite.insert_reset", level = "debug", skip_all)]
    async fn insert(&self, r: ResetRecord) -> Result<(), AuthStoreError> {
        sqlx::query(
            "INSERT INTO auth_password_resets (token_hash, user_id, expires_at, used_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&r.token_hash)
        .bind(r.user_id.to_string())
        .bind(ts(r.expires_at))
        .bind(opt_ts(r.used_at))
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.find_reset", level = "debug", skip_all)]
    async fn find(&self, token_hash: &str) -> Result<Option<ResetRecord>, AuthStoreError> {
        let row = sqlx::query("SELECT user_id, expires_at, used_at FROM auth_password_resets WHERE token_hash = ?1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| reset_record(token_hash, &r)).transpose()
    }

    #[tracing::instrument(name = "auth.sqlite.consume_reset", level = "debug", skip_all)]
    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<ResetRecord>, AuthStoreError> {
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await.map_err(db)?;
        let row = sqlx::query("SELECT user_id, expires_at, used_at FROM auth_password_resets WHERE token_hash = ?1")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            tx.commit().await.map_err(db)?;
            return Ok(None);
        };
        let before = reset_record(token_hash, &row)?;
        if before.used_at.is_none() {
            sqlx::query("UPDATE auth_password_resets SET used_at = ?2 WHERE token_hash = ?1")
                .bind(token_hash)
                .bind(ts(now))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Some(before))
    }

    #[tracing::instrument(name = "auth.sqlite.revoke_resets", level = "debug", skip_all)]
    async fn revoke_for_user(&self, user_id: Uuid) -> Result<(), AuthStoreError> {
        sqlx::query("DELETE FROM auth_password_resets WHERE user_id = ?1")
            .bind(user_id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.purge_resets", level = "debug", skip_all)]
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, AuthStoreError> {
        let done = sqlx::query(
            "DELETE FROM auth_password_resets WHERE token_hash IN \
             (SELECT token_hash FROM auth_password_resets WHERE expires_at <= ?1 LIMIT ?2)",
        )
        .bind(ts(now))
        .bind(PURGE_BATCH)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl LoginAttempts for SqliteAuthStore {
    #[tracing::instrument(name = "auth.sqlite.attempts", level = "debug", skip_all)]
    async fn get(&self, key: AttemptKey<'_>) -> Result<Attempts, AuthStoreError> {
        let row =
            sqlx::query("SELECT failures, locked_until FROM auth_login_failures WHERE username = ?1 AND source = ?2")
                .bind(key.username)
                .bind(key.source)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.as_ref().map(attempts).transpose().map(Option::unwrap_or_default)
    }

    #[tracing::instrument(name = "auth.sqlite.record_failure", level = "debug", skip_all)]
    async fn record_failure(
        &self,
        key: AttemptKey<'_>,
        policy: LockoutPolicy,
        now: DateTime<Utc>,
    ) -> Result<Attempts, AuthStoreError> {
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await.map_err(db)?;
        let row =
            sqlx::query("SELECT failures, locked_until FROM auth_login_failures WHERE username = ?1 AND source = ?2")
                .bind(key.username)
                .bind(key.source)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let before = row.as_ref().map(attempts).transpose()?.unwrap_or_default();
        let next = policy.after_failure(before, now);
        sqlx::query(
            "INSERT INTO auth_login_failures (username, source, failures, locked_until, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (username, source) DO UPDATE SET \
             failures = excluded.failures, locked_until = excluded.locked_until, updated_at = excluded.updated_at",
        )
        .bind(key.username)
        .bind(key.source)
        .bind(i64::from(next.failures))
        .bind(opt_ts(next.locked_until))
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(next)
    }

    #[tracing::instrument(name = "auth.sqlite.clear_attempts", level = "debug", skip_all)]
    async fn clear(&self, key: AttemptKey<'_>) -> Result<(), AuthStoreError> {
        sqlx::query("DELETE FROM auth_login_failures WHERE username = ?1 AND source = ?2")
            .bind(key.username)
            .bind(key.source)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.clear_user_attempts", level = "debug", skip_all)]
    async fn clear_user(&self, username: &str) -> Result<(), AuthStoreError> {
        sqlx::query("DELETE FROM auth_login_failures WHERE username = ?1")
            .bind(username)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.purge_attempts", level = "debug", skip_all)]
    async fn purge_idle(&self, now: DateTime<Utc>, idle: chrono::Duration) -> Result<u64, AuthStoreError> {
        let done = sqlx::query(
            "DELETE FROM auth_login_failures WHERE rowid IN (SELECT rowid FROM auth_login_failures \
             WHERE updated_at < ?1 AND (locked_until IS NULL OR locked_until <= ?2) LIMIT ?3)",
        )
        .bind(ts(now - idle))
        .bind(ts(now))
        .bind(PURGE_BATCH)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl MailOutbox for SqliteAuthStore {
    #[tracing::instrument(name = "auth.sqlite.queue_reset", level = "debug", skip_all)]
    async fn queue_reset(&self, mail: QueuedReset) -> Result<(), AuthStoreError> {
        sqlx::query("INSERT INTO auth_reset_mails (recipient, token_seed, expires_at) VALUES (?1, ?2, ?3)")
            .bind(&mail.to)
            .bind(&mail.token_seed)
            .bind(ts(mail.expires_at))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        tracing::info!(expires_at = %mail.expires_at, "password reset mail queued in auth_reset_mails");
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.take_resets", level = "debug", skip_all)]
    async fn take_resets(&self, to: &str, now: DateTime<Utc>) -> Result<Vec<QueuedReset>, AuthStoreError> {
        let rows = sqlx::query(
            "DELETE FROM auth_reset_mails WHERE recipient = ?1 RETURNING id, recipient, token_seed, expires_at",
        )
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut mails = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id").map_err(db)?;
            let mail = QueuedReset {
                to: r.try_get("recipient").map_err(db)?,
                token_seed: r.try_get("token_seed").map_err(db)?,
                expires_at: get_ts(r, "expires_at")?,
            };
            if mail.expires_at > now {
                mails.push((id, mail));
            }
        }
        mails.sort_by_key(|(id, _)| *id);
        Ok(mails.into_iter().map(|(_, m)| m).collect())
    }

    #[tracing::instrument(name = "auth.sqlite.discard_resets", level = "debug", skip_all)]
    async fn discard_resets(&self, to: &str) -> Result<(), AuthStoreError> {
        sqlx::query("DELETE FROM auth_reset_mails WHERE recipient = ?1")
            .bind(to)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.sqlite.purge_mails", level = "debug", skip_all)]
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, AuthStoreError> {
        let done = sqlx::query(
            "DELETE FROM auth_reset_mails WHERE id IN (SELECT id FROM auth_reset_mails WHERE expires_at <= ?1 LIMIT ?2)",
        )
        .bind(ts(now))
        .bind(PURGE_BATCH)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl RevocationLog for SqliteAuthStore {
    async fn record(
        &self,
        revocation: Revocation,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthStoreError> {
        let (kind, id) = revocation.key();
        let mut tx = self.pool.begin_with(BEGIN_IMMEDIATE).await.map_err(db)?;
        sqlx::query("DELETE FROM auth_revocations WHERE until < ?")
            .bind(ts(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO auth_revocations (kind, id, detail, until) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (kind, id) DO UPDATE SET detail = excluded.detail, \
               until = max(auth_revocations.until, excluded.until)",
        )
        .bind(kind)
        .bind(id.to_string())
        .bind(revocation.detail())
        .bind(ts(until))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn live(&self, now: DateTime<Utc>) -> Result<Vec<(Revocation, DateTime<Utc>)>, AuthStoreError> {
        let rows = sqlx::query("SELECT kind, id, detail, until FROM auth_revocations WHERE until > ?")
            .bind(ts(now))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut live = Vec::with_capacity(rows.len());
        for row in rows {
            let kind: String = row.try_get("kind").map_err(db)?;
            let id = get_uuid(&row, "id")?;
            let detail: Option<String> = row.try_get("detail").map_err(db)?;
            let until = get_ts(&row, "until")?;
            match Revocation::from_row(&kind, id, detail.as_deref()) {
                Some(r) => live.push((r, until)),
                None => tracing::warn!(kind, %id, "unreadable revocation row skipped"),
            }
        }
        Ok(live)
    }
}
