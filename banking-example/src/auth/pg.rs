//! The auth tables in PostgreSQL, in the application's schema: users,
//! refresh tokens, reset tokens, login failures and the reset mails.
//! [`PgAuthStore`] implements every auth store trait over one pool.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;
use uuid::Uuid;

use super::blacklist::{Revocation, RevocationLog};
use super::lockout::{AttemptKey, Attempts, LockoutPolicy, LoginAttempts};
use super::rbac::Role;
use super::refresh::{RefreshRecord, RefreshStore};
use super::reset::{MailOutbox, QueuedReset, ResetRecord, ResetStore};
use super::users::{User, UserStore};
use super::AuthStoreError;

/// The migration creating the auth tables (`{s}` is the schema).
const MIGRATION: &str = include_str!("pg_schema.sql");

fn db(e: sqlx::Error) -> AuthStoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => AuthStoreError::Duplicate,
        _ => AuthStoreError::Backend(format!("postgres: {e}")),
    }
}

/// Every auth store on PostgreSQL, in one schema.
#[derive(Debug, Clone)]
pub struct PgAuthStore {
    pool: PgPool,
    s: String,
}

impl PgAuthStore {
    /// The store in `schema` (an identifier already validated by
    /// es-postgres, which created the schema).
    pub fn new(pool: PgPool, schema: &str) -> Self {
        Self {
            pool,
            s: schema.to_owned(),
        }
    }

    /// Creates the tables if missing (idempotent; serialized across
    /// processes by an advisory lock).
    pub async fn migrate(&self) -> Result<(), AuthStoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("banking-auth-migrate-{}", self.s))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::raw_sql(&MIGRATION.replace("{s}", &self.s))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema of the tables.
    pub fn schema(&self) -> &str {
        &self.s
    }
}

/// Most rows one purge statement deletes (keeps each purge short).
const PURGE_BATCH: i64 = 1000;

fn attempts(row: &PgRow) -> Result<Attempts, AuthStoreError> {
    Ok(Attempts {
        failures: u32::try_from(row.try_get::<i32, _>(0).map_err(db)?).unwrap_or(0),
        locked_until: row.try_get(1).map_err(db)?,
    })
}

fn reset_record(token_hash: &str, r: &PgRow) -> Result<ResetRecord, AuthStoreError> {
    Ok(ResetRecord {
        token_hash: token_hash.to_owned(),
        user_id: r.try_get(0).map_err(db)?,
        expires_at: r.try_get(1).map_err(db)?,
        used_at: r.try_get(2).map_err(db)?,
    })
}

fn user(row: &PgRow) -> Result<User, AuthStoreError> {
    let roles: Vec<String> = row.try_get("roles").map_err(db)?;
    Ok(User {
        id: row.try_get("id").map_err(db)?,
        username: row.try_get("username").map_err(db)?,
        password_hash: row.try_get("password_hash").map_err(db)?,
        roles: roles.iter().filter_map(|r| Role::parse(r)).collect(),
        created_at: row.try_get("created_at").map_err(db)?,
    })
}

fn role_names(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_owned()).collect()
}

const USER_COLUMNS: &str = "id, username, password_hash, roles, created_at";

#[async_trait]
impl UserStore for PgAuthStore {
    async fn create(&self, u: User) -> Result<(), AuthStoreError> {
        sqlx::query(&format!(
            "INSERT INTO {}.auth_users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
            self.s
        ))
        .bind(u.id)
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(role_names(&u.roles))
        .bind(u.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn by_username(&self, username: &str) -> Result<Option<User>, AuthStoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM {}.auth_users WHERE username = $1", self.s);
        let row = sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(user).transpose()
    }

    async fn by_id(&self, id: Uuid) -> Result<Option<User>, AuthStoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM {}.auth_users WHERE id = $1", self.s);
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(user).transpose()
    }

    async fn set_password(&self, id: Uuid, password_hash: &str) -> Result<(), AuthStoreError> {
        let sql = format!("UPDATE {}.auth_users SET password_hash = $2 WHERE id = $1", self.s);
        let done = sqlx::query(&sql)
            .bind(id)
            .bind(password_hash)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(AuthStoreError::NotFound);
        }
        Ok(())
    }

    async fn set_roles(&self, id: Uuid, roles: &[Role]) -> Result<(), AuthStoreError> {
        let sql = format!("UPDATE {}.auth_users SET roles = $2 WHERE id = $1", self.s);
        let done = sqlx::query(&sql)
            .bind(id)
            .bind(role_names(roles))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(AuthStoreError::NotFound);
        }
        Ok(())
    }

    async fn list(&self, offset: usize, limit: usize) -> Result<(Vec<User>, usize), AuthStoreError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM {}.auth_users ORDER BY username OFFSET $1 LIMIT $2",
            self.s
        );
        let rows = sqlx::query(&sql)
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}.auth_users", self.s))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let users = rows.iter().map(user).collect::<Result<_, _>>()?;
        Ok((users, usize::try_from(total).unwrap_or(0)))
    }
}

#[async_trait]
impl RefreshStore for PgAuthStore {
    async fn insert(&self, r: RefreshRecord) -> Result<(), AuthStoreError> {
        sqlx::query(&format!(
            "INSERT INTO {}.auth_refresh_tokens (token_hash, user_id, family_id, expires_at, used_at, revoked) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            self.s
        ))
        .bind(&r.token_hash)
        .bind(r.user_id)
        .bind(r.family_id)
        .bind(r.expires_at)
        .bind(r.used_at)
        .bind(r.revoked)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<RefreshRecord>, AuthStoreError> {
        // The row lock makes concurrent uses of one token see each other:
        // exactly one gets `used_at` NULL.
        let sql = format!(
            "UPDATE {s}.auth_refresh_tokens t SET used_at = COALESCE(t.used_at, $2) \
             FROM (SELECT token_hash, used_at FROM {s}.auth_refresh_tokens WHERE token_hash = $1 FOR UPDATE) old \
             WHERE t.token_hash = old.token_hash \
             RETURNING t.user_id, t.family_id, t.expires_at, old.used_at, t.revoked",
            s = self.s
        );
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            Ok(RefreshRecord {
                token_hash: token_hash.to_owned(),
                user_id: r.try_get(0).map_err(db)?,
                family_id: r.try_get(1).map_err(db)?,
                expires_at: r.try_get(2).map_err(db)?,
                used_at: r.try_get(3).map_err(db)?,
                revoked: r.try_get(4).map_err(db)?,
            })
        })
        .transpose()
    }

    async fn revoke_family(&self, family_id: Uuid) -> Result<(), AuthStoreError> {
        let sql = format!(
            "UPDATE {}.auth_refresh_tokens SET revoked = true WHERE family_id = $1",
            self.s
        );
        sqlx::query(&sql)
            .bind(family_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn revoke_user(&self, user_id: Uuid, keep: Option<Uuid>) -> Result<Vec<Uuid>, AuthStoreError> {
        let sql = format!(
            "WITH revoked AS (UPDATE {}.auth_refresh_tokens SET revoked = true WHERE user_id = $1 \
             AND ($2::uuid IS NULL OR family_id <> $2) RETURNING family_id) \
             SELECT DISTINCT family_id FROM revoked",
            self.s
        );
        sqlx::query_scalar(&sql)
            .bind(user_id)
            .bind(keep)
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }
}

#[async_trait]
impl ResetStore for PgAuthStore {
    #[tracing::instrument(name = "auth.pg.insert_reset", level = "debug", skip_all)]
    async fn insert(&self, r: ResetRecord) -> Result<(), AuthStoreError> {
        sqlx::query(&format!(
            "INSERT INTO {}.auth_password_resets (token_hash, user_id, expires_at, used_at) VALUES ($1, $2, $3, $4)",
            self.s
        ))
        .bind(&r.token_hash)
        .bind(r.user_id)
        .bind(r.expires_at)
        .bind(r.used_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.pg.find_reset", level = "debug", skip_all)]
    async fn find(&self, token_hash: &str) -> Result<Option<ResetRecord>, AuthStoreError> {
        let sql = format!(
            "SELECT user_id, expires_at, used_at FROM {}.auth_password_resets WHERE token_hash = $1",
            self.s
        );
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| reset_record(token_hash, &r)).transpose()
    }

    #[tracing::instrument(name = "auth.pg.consume_reset", level = "debug", skip_all)]
    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<ResetRecord>, AuthStoreError> {
        let sql = format!(
            "UPDATE {s}.auth_password_resets t SET used_at = COALESCE(t.used_at, $2) \
             FROM (SELECT token_hash, used_at FROM {s}.auth_password_resets WHERE token_hash = $1 FOR UPDATE) old \
             WHERE t.token_hash = old.token_hash RETURNING t.user_id, t.expires_at, old.used_at",
            s = self.s
        );
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| reset_record(token_hash, &r)).transpose()
    }

    #[tracing::instrument(name = "auth.pg.revoke_resets", level = "debug", skip_all)]
    async fn revoke_for_user(&self, user_id: Uuid) -> Result<(), AuthStoreError> {
        let sql = format!("DELETE FROM {}.auth_password_resets WHERE user_id = $1", self.s);
        sqlx::query(&sql).bind(user_id).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.pg.purge_resets", level = "debug", skip_all)]
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, AuthStoreError> {
        let sql = format!(
            "DELETE FROM {s}.auth_password_resets WHERE token_hash IN \
             (SELECT token_hash FROM {s}.auth_password_resets WHERE expires_at <= $1 LIMIT $2)",
            s = self.s
        );
        let done = sqlx::query(&sql)
            .bind(now)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl LoginAttempts for PgAuthStore {
    #[tracing::instrument(name = "auth.pg.attempts", level = "debug", skip_all)]
    async fn get(&self, key: AttemptKey<'_>) -> Result<Attempts, AuthStoreError> {
        let sql = format!(
            "SELECT failures, locked_until FROM {}.auth_login_failures WHERE username = $1 AND source = $2",
            self.s
        );
        let row = sqlx::query(&sql)
            .bind(key.username)
            .bind(key.source)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(attempts).transpose().map(Option::unwrap_or_default)
    }

    #[tracing::instrument(name = "auth.pg.record_failure", level = "debug", skip_all)]
    async fn record_failure(
        &self,
        key: AttemptKey<'_>,
        policy: LockoutPolicy,
        now: DateTime<Utc>,
    ) -> Result<Attempts, AuthStoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(&format!(
            "INSERT INTO {}.auth_login_failures (username, source, failures, updated_at) VALUES ($1, $2, 0, $3) \
             ON CONFLICT DO NOTHING",
            self.s
        ))
        .bind(key.username)
        .bind(key.source)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let row = sqlx::query(&format!(
            "SELECT failures, locked_until FROM {}.auth_login_failures WHERE username = $1 AND source = $2 FOR UPDATE",
            self.s
        ))
        .bind(key.username)
        .bind(key.source)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let next = policy.after_failure(attempts(&row)?, now);
        sqlx::query(&format!(
            "UPDATE {}.auth_login_failures SET failures = $3, locked_until = $4, updated_at = $5 \
             WHERE username = $1 AND source = $2",
            self.s
        ))
        .bind(key.username)
        .bind(key.source)
        .bind(i32::try_from(next.failures).unwrap_or(i32::MAX))
        .bind(next.locked_until)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(next)
    }

    #[tracing::instrument(name = "auth.pg.clear_attempts", level = "debug", skip_all)]
    async fn clear(&self, key: AttemptKey<'_>) -> Result<(), AuthStoreError> {
        let sql = format!(
            "DELETE FROM {}.auth_login_failures WHERE username = $1 AND source = $2",
            self.s
        );
        sqlx::query(&sql)
            .bind(key.username)
            .bind(key.source)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.pg.clear_user_attempts", level = "debug", skip_all)]
    async fn clear_user(&self, username: &str) -> Result<(), AuthStoreError> {
        let sql = format!("DELETE FROM {}.auth_login_failures WHERE username = $1", self.s);
        sqlx::query(&sql).bind(username).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.pg.purge_attempts", level = "debug", skip_all)]
    async fn purge_idle(&self, now: DateTime<Utc>, idle: chrono::Duration) -> Result<u64, AuthStoreError> {
        let sql = format!(
            "DELETE FROM {s}.auth_login_failures WHERE (username, source) IN \
             (SELECT username, source FROM {s}.auth_login_failures \
              WHERE updated_at < $1 AND (locked_until IS NULL OR locked_until <= $2) LIMIT $3)",
            s = self.s
        );
        let done = sqlx::query(&sql)
            .bind(now - idle)
            .bind(now)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl MailOutbox for PgAuthStore {
    #[tracing::instrument(name = "auth.pg.queue_reset", level = "debug", skip_all)]
    async fn queue_reset(&self, mail: QueuedReset) -> Result<(), AuthStoreError> {
        sqlx::query(&format!(
            "INSERT INTO {}.auth_reset_mails (recipient, token_seed, expires_at) VALUES ($1, $2, $3)",
            self.s
        ))
        .bind(&mail.to)
        .bind(&mail.token_seed)
        .bind(mail.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        tracing::info!(expires_at = %mail.expires_at, "password reset mail queued in auth_reset_mails");
        Ok(())
    }

    #[tracing::instrument(name = "auth.pg.take_resets", level = "debug", skip_all)]
    async fn take_resets(&self, to: &str, now: DateTime<Utc>) -> Result<Vec<QueuedReset>, AuthStoreError> {
        let sql = format!(
            "DELETE FROM {}.auth_reset_mails WHERE recipient = $1 RETURNING id, recipient, token_seed, expires_at",
            self.s
        );
        let rows = sqlx::query(&sql).bind(to).fetch_all(&self.pool).await.map_err(db)?;
        let mut mails = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get(0).map_err(db)?;
            let mail = QueuedReset {
                to: r.try_get(1).map_err(db)?,
                token_seed: r.try_get(2).map_err(db)?,
                expires_at: r.try_get(3).map_err(db)?,
            };
            if mail.expires_at > now {
                mails.push((id, mail));
            }
        }
        mails.sort_by_key(|(id, _)| *id);
        Ok(mails.into_iter().map(|(_, m)| m).collect())
    }

    #[tracing::instrument(name = "auth.pg.discard_resets", level = "debug", skip_all)]
    async fn discard_resets(&self, to: &str) -> Result<(), AuthStoreError> {
        let sql = format!("DELETE FROM {}.auth_reset_mails WHERE recipient = $1", self.s);
        sqlx::query(&sql).bind(to).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(name = "auth.pg.purge_mails", level = "debug", skip_all)]
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, AuthStoreError> {
        let sql = format!(
            "DELETE FROM {s}.auth_reset_mails WHERE id IN \
             (SELECT id FROM {s}.auth_reset_mails WHERE expires_at <= $1 LIMIT $2)",
            s = self.s
        );
        let done = sqlx::query(&sql)
            .bind(now)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl RevocationLog for PgAuthStore {
    async fn record(
        &self,
        revocation: Revocation,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthStoreError> {
        let s = &self.s;
        let (kind, id) = revocation.key();
        sqlx::query(&format!(
            "WITH gone AS (DELETE FROM {s}.auth_revocations WHERE until < $5) \
             INSERT INTO {s}.auth_revocations (kind, id, detail, until) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, id) DO UPDATE SET detail = excluded.detail, \
               until = GREATEST({s}.auth_revocations.until, excluded.until)"
        ))
        .bind(kind)
        .bind(id)
        .bind(revocation.detail())
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn live(&self, now: DateTime<Utc>) -> Result<Vec<(Revocation, DateTime<Utc>)>, AuthStoreError> {
        let rows = sqlx::query(&format!(
            "SELECT kind, id, detail, until FROM {}.auth_revocations WHERE until > $1",
            self.s
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut live = Vec::with_capacity(rows.len());
        for row in rows {
            let kind: String = row.try_get("kind").map_err(db)?;
            let id: Uuid = row.try_get("id").map_err(db)?;
            let detail: Option<String> = row.try_get("detail").map_err(db)?;
            let until: DateTime<Utc> = row.try_get("until").map_err(db)?;
            match Revocation::from_row(&kind, id, detail.as_deref()) {
                Some(r) => live.push((r, until)),
                None => tracing::warn!(kind, %id, "unreadable revocation row skipped"),
            }
        }
        Ok(live)
    }
}
