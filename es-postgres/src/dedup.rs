//! [`PostgresDeduplicator`]: idempotency keys in the event store's
//! database, shared by every process on it (no Redis needed), surviving
//! restarts, and bounded by time rather than by memory. Outcomes are
//! kept as JSON text, byte for byte (exact decimals). Its SQL lives
//! here, next to the only code that runs it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::{CommandDeduplicator, DedupClaim, DedupError, DedupStatus};
use serde_json::Value;
use sqlx::postgres::PgPool;
use sqlx::Row;

use crate::PostgresEventStore;

fn unavailable(operation: &'static str) -> impl FnOnce(sqlx::Error) -> DedupError {
    move |e| DedupError::Unavailable {
        operation,
        source: Box::new(e),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Expired keys are purged every this many completions.
const PURGE_EVERY: u64 = 1024;
/// Most keys one purge deletes (keeps each purge short).
const PURGE_BATCH: i64 = 10_000;

/// es-core's `CommandDeduplicator` on PostgreSQL (table `dedup_keys` in
/// the store's schema, created by [`new`](Self::new)).
///
/// A key is in progress from `begin` until `complete` (its outcome is then
/// kept for `window`) or `abandon`; an in-progress key older than
/// `in_flight_ttl` (its owner died) may be begun again. `begin` is one
/// `INSERT … ON CONFLICT DO UPDATE … WHERE expired` statement: of two
/// concurrent `begin`s of a key, from one process or several, exactly one
/// gets `Started`. Each row keeps the claim that marked it, and
/// `complete` and `abandon` are statements conditional on it: a late
/// holder whose key a retry took changes nothing. Expired keys are deleted in batches every 1024
/// completions, so the table holds about one window of keys.
///
/// [`new`](Self::new) forgets the keys in progress: they belong to a
/// process that died (killed between `begin` and `complete`), and a client
/// retrying one must not wait `in_flight_ttl` for it. What the dead
/// process may have committed is still recognised: the repository derives
/// event ids from the key, so the retry cannot apply twice. (With several
/// processes on one database, a process starting forgets the others' keys
/// in progress too; the same event ids keep a concurrent duplicate from
/// applying twice.)
///
/// ```no_run
/// # async fn demo(store: es_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use es_core::{CommandDeduplicator, DedupStatus};
/// use es_postgres::PostgresDeduplicator;
///
/// let dedup = PostgresDeduplicator::new(&store, Duration::from_secs(24 * 3600), Duration::from_secs(30)).await?;
/// let DedupStatus::Started(claim) = dedup.begin("client-1:key-1").await? else {
///     return Err("the key is already in use".into());
/// };
/// dedup.complete("client-1:key-1", &claim, &serde_json::json!({"status": 200})).await?;
/// assert!(matches!(dedup.begin("client-1:key-1").await?, DedupStatus::Completed(_)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresDeduplicator {
    pool: PgPool,
    begin_sql: Arc<str>,
    read_sql: Arc<str>,
    complete_sql: Arc<str>,
    abandon_sql: Arc<str>,
    renew_sql: Arc<str>,
    purge_sql: Arc<str>,
    window: Duration,
    in_flight_ttl: Duration,
    completions: Arc<AtomicU64>,
}

impl PostgresDeduplicator {
    /// Keys in `store`'s schema, completed outcomes kept for `window`,
    /// in-flight marks for `in_flight_ttl`.
    pub async fn new(
        store: &PostgresEventStore,
        window: Duration,
        in_flight_ttl: Duration,
    ) -> Result<Self, DedupError> {
        let pool = store.pool().clone();
        let s = store.schema();
        let mut tx = pool.begin().await.map_err(unavailable("begin dedup setup"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("es-postgres-dedup-{s}"))
            .execute(&mut *tx)
            .await
            .map_err(unavailable("lock dedup setup"))?;
        sqlx::raw_sql(&format!(
            "CREATE TABLE IF NOT EXISTS {s}.dedup_keys (key TEXT PRIMARY KEY, outcome TEXT, \
             since TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), claim TEXT); \
             CREATE INDEX IF NOT EXISTS dedup_keys_since ON {s}.dedup_keys (since)"
        ))
        .execute(&mut *tx)
        .await
        .map_err(unavailable("create dedup table"))?;
        // A table from before claims were kept gains the column. Checked
        // first: `ALTER TABLE` locks the table out even when it adds nothing.
        let has_claim: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'dedup_keys' AND column_name = 'claim')",
        )
        .bind(s)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable("read dedup table columns"))?;
        if !has_claim {
            sqlx::query(&format!("ALTER TABLE {s}.dedup_keys ADD COLUMN claim TEXT"))
                .execute(&mut *tx)
                .await
                .map_err(unavailable("add the dedup claim column"))?;
        }
        sqlx::query(&format!("DELETE FROM {s}.dedup_keys WHERE outcome IS NULL"))
            .execute(&mut *tx)
            .await
            .map_err(unavailable("forget keys in progress"))?;
        tx.commit().await.map_err(unavailable("commit dedup setup"))?;
        Ok(Self {
            pool,
            // Claims a new key, an expired outcome, or an in-flight mark
            // whose owner died; returns a row only when it did.
            begin_sql: format!(
                "INSERT INTO {s}.dedup_keys AS d (key, outcome, since, claim) VALUES ($1, NULL, clock_timestamp(), $4) \
                 ON CONFLICT (key) DO UPDATE SET outcome = NULL, since = clock_timestamp(), claim = excluded.claim \
                 WHERE (d.outcome IS NOT NULL AND d.since < clock_timestamp() - $2 * interval '1 millisecond') \
                    OR (d.outcome IS NULL AND d.since < clock_timestamp() - $3 * interval '1 millisecond') \
                 RETURNING true"
            )
            .into(),
            read_sql: format!("SELECT outcome FROM {s}.dedup_keys WHERE key = $1").into(),
            // Stores the outcome over the claim's own mark or a free key;
            // updates no row when another mark or an outcome is live.
            complete_sql: format!(
                "INSERT INTO {s}.dedup_keys AS d (key, outcome, since, claim) VALUES ($1, $2, clock_timestamp(), $3) \
                 ON CONFLICT (key) DO UPDATE SET outcome = excluded.outcome, since = excluded.since, claim = excluded.claim \
                 WHERE (d.outcome IS NULL AND d.claim = excluded.claim) \
                    OR (d.outcome IS NOT NULL AND d.since < clock_timestamp() - $4 * interval '1 millisecond') \
                    OR (d.outcome IS NULL AND d.since < clock_timestamp() - $5 * interval '1 millisecond')"
            )
            .into(),
            abandon_sql: format!("DELETE FROM {s}.dedup_keys WHERE key = $1 AND outcome IS NULL AND claim = $2").into(),
            // Restarts the claim's own live mark.
            renew_sql: format!(
                "UPDATE {s}.dedup_keys SET since = clock_timestamp() \
                 WHERE key = $1 AND outcome IS NULL AND claim = $2 \
                   AND since >= clock_timestamp() - $3 * interval '1 millisecond'"
            )
            .into(),
            purge_sql: format!(
                "DELETE FROM {s}.dedup_keys WHERE key IN (SELECT key FROM {s}.dedup_keys \
                 WHERE since < clock_timestamp() - $1 * interval '1 millisecond' LIMIT $2)"
            )
            .into(),
            window,
            in_flight_ttl,
            completions: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Deletes up to 10,000 keys whose window (and in-flight time) ended;
    /// returns how many. Runs by itself every 1024 completions.
    pub async fn purge_expired(&self) -> Result<u64, DedupError> {
        let older_than = millis(self.window.max(self.in_flight_ttl));
        let done = sqlx::query(&self.purge_sql)
            .bind(older_than)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await
            .map_err(unavailable("purge dedup keys"))?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl CommandDeduplicator for PostgresDeduplicator {
    /// Runs `SELECT 1` on the database that holds the keys: down when a
    /// `begin` could not reach it now.
    #[tracing::instrument(level = "debug", name = "es.pg.dedup.check", skip_all)]
    async fn check(&self) -> Result<(), DedupError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable("check"))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "es.pg.dedup.begin", skip_all)]
    async fn begin(&self, key: &str) -> Result<DedupStatus, DedupError> {
        // A key abandoned between the two statements is claimed on the
        // next round; two rounds settle any race.
        for _ in 0..3 {
            let claim = DedupClaim::new();
            let claimed = sqlx::query(&self.begin_sql)
                .bind(key)
                .bind(millis(self.window))
                .bind(millis(self.in_flight_ttl))
                .bind(claim.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable("begin dedup key"))?;
            if claimed.is_some() {
                return Ok(DedupStatus::Started(claim));
            }
            let row = sqlx::query(&self.read_sql)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable("read dedup key"))?;
            if let Some(row) = row {
                let outcome: Option<String> = row.try_get(0).map_err(unavailable("decode dedup key"))?;
                return match outcome {
                    None => Ok(DedupStatus::InProgress),
                    Some(text) => {
                        serde_json::from_str(&text)
                            .map(DedupStatus::Completed)
                            .map_err(|e| DedupError::Unavailable {
                                operation: "decode dedup outcome",
                                source: Box::new(e),
                            })
                    }
                };
            }
        }
        Ok(DedupStatus::InProgress)
    }

    #[tracing::instrument(level = "debug", name = "es.pg.dedup.complete", skip_all)]
    async fn complete(&self, key: &str, claim: &DedupClaim, outcome: &Value) -> Result<(), DedupError> {
        let text = outcome.to_string();
        let stored = sqlx::query(&self.complete_sql)
            .bind(key)
            .bind(&text)
            .bind(claim.as_str())
            .bind(millis(self.window))
            .bind(millis(self.in_flight_ttl))
            .execute(&self.pool)
            .await
            .map_err(unavailable("complete dedup key"))?;
        if stored.rows_affected() == 0 {
            // Kept already (a retried call) unless the outcome differs.
            let kept: Option<Option<String>> = sqlx::query_scalar(&self.read_sql)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable("read dedup key"))?;
            return match kept.flatten() {
                Some(kept) if kept == text => Ok(()),
                _ => Err(DedupError::ClaimLost { key: key.to_owned() }),
            };
        }
        if self.completions.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            match self.purge_expired().await {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "expired idempotency keys deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not purge expired idempotency keys"),
            }
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "es.pg.dedup.abandon", skip_all)]
    async fn abandon(&self, key: &str, claim: &DedupClaim) -> Result<(), DedupError> {
        sqlx::query(&self.abandon_sql)
            .bind(key)
            .bind(claim.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable("abandon dedup key"))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "es.pg.dedup.renew", skip_all)]
    async fn renew(&self, key: &str, claim: &DedupClaim) -> Result<bool, DedupError> {
        let renewed = sqlx::query(&self.renew_sql)
            .bind(key)
            .bind(claim.as_str())
            .bind(millis(self.in_flight_ttl))
            .execute(&self.pool)
            .await
            .map_err(unavailable("renew dedup key"))?;
        Ok(renewed.rows_affected() == 1)
    }
}
