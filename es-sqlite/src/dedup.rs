//! [`SqliteDeduplicator`]: idempotency keys kept in the SQLite file, so a
//! restart still recognises a retry and answers it with the first response.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::{CommandDeduplicator, DedupClaim, DedupError, DedupStatus};
use serde_json::Value;
use sqlx::sqlite::SqlitePool;
use sqlx::Row;

use crate::SqliteEventStore;

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
/// Most keys one purge deletes: twice what accrues between purges, and a
/// short write (it holds the file's write lock).
const PURGE_BATCH: i64 = 2048;

/// es-core's `CommandDeduplicator` on the event store's SQLite file (table
/// `dedup_keys`, created by [`new`](Self::new)). Keys past their window are
/// deleted in the background every 1024 completions
/// ([`purge_expired`](Self::purge_expired)).
///
/// A key is `in progress` from `begin` until `complete` (its outcome is
/// kept for `window`) or `abandon`; an in-progress key older than
/// `in_flight_ttl` may be begun again. Each `begin` is one `BEGIN
/// IMMEDIATE` transaction: two concurrent `begin`s of one key, from one
/// process or several, never both get `Started`. Each row keeps the claim
/// that marked it, and `complete` and `abandon` are statements conditional
/// on it: a late holder whose key a retry took changes nothing.
///
/// [`new`](Self::new) forgets the keys in progress: they belong to a
/// process that died (killed between `begin` and `complete`), and a client
/// retrying one must not wait `in_flight_ttl` for it. What the dead
/// process may have committed is still recognised: the repository derives
/// event ids from the key, so the retry cannot apply twice. (With several
/// processes on one file, a process starting forgets the others' keys in
/// progress too; the same event ids keep a concurrent duplicate from
/// applying twice.)
///
/// ```no_run
/// # async fn demo(store: es_sqlite::SqliteEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use es_core::{CommandDeduplicator, DedupStatus};
/// use es_sqlite::SqliteDeduplicator;
///
/// let dedup = SqliteDeduplicator::new(&store, Duration::from_secs(24 * 3600), Duration::from_secs(30)).await?;
/// let DedupStatus::Started(claim) = dedup.begin("client-1:key-1").await? else {
///     return Err("the key is already in use".into());
/// };
/// dedup.complete("client-1:key-1", &claim, &serde_json::json!({"status": 200})).await?;
/// assert!(matches!(dedup.begin("client-1:key-1").await?, DedupStatus::Completed(_)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteDeduplicator {
    pool: SqlitePool,
    window: Duration,
    in_flight_ttl: Duration,
    completions: Arc<AtomicU64>,
    /// Whether a background purge is running (one at a time).
    purging: Arc<AtomicBool>,
}

impl SqliteDeduplicator {
    /// Keys in `store`'s file, completed outcomes kept for `window`.
    pub async fn new(store: &SqliteEventStore, window: Duration, in_flight_ttl: Duration) -> Result<Self, DedupError> {
        let pool = store.pool().clone();
        // One writer at a time, so that two processes opening a file from
        // before claims were kept do not both add the column.
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable("begin dedup setup"))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS dedup_keys (key TEXT PRIMARY KEY, outcome TEXT, \
             since_ms INTEGER NOT NULL, claim TEXT)",
        )
        .execute(&mut *tx)
        .await
        .map_err(unavailable("create dedup table"))?;
        let has_claim: bool =
            sqlx::query_scalar("SELECT count(*) > 0 FROM pragma_table_info('dedup_keys') WHERE name = 'claim'")
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable("read dedup table columns"))?;
        if !has_claim {
            sqlx::query("ALTER TABLE dedup_keys ADD COLUMN claim TEXT")
                .execute(&mut *tx)
                .await
                .map_err(unavailable("add the dedup claim column"))?;
        }
        tx.commit().await.map_err(unavailable("commit dedup setup"))?;
        sqlx::query("CREATE INDEX IF NOT EXISTS dedup_keys_since ON dedup_keys (since_ms)")
            .execute(&pool)
            .await
            .map_err(unavailable("create dedup index"))?;
        sqlx::query("DELETE FROM dedup_keys WHERE outcome IS NULL")
            .execute(&pool)
            .await
            .map_err(unavailable("forget keys in progress"))?;
        Ok(Self {
            pool,
            window,
            in_flight_ttl,
            completions: Arc::new(AtomicU64::new(0)),
            purging: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Deletes up to 2,048 keys whose window (and in-flight time) ended;
    /// returns how many. Runs by itself, in the background, every 1024
    /// completions.
    pub async fn purge_expired(&self) -> Result<u64, DedupError> {
        let older_than = millis(self.window.max(self.in_flight_ttl));
        let done =
            sqlx::query("DELETE FROM dedup_keys WHERE key IN (SELECT key FROM dedup_keys WHERE since_ms < ? LIMIT ?)")
                .bind(Self::now_ms().saturating_sub(older_than))
                .bind(PURGE_BATCH)
                .execute(&self.pool)
                .await
                .map_err(unavailable("purge dedup keys"))?;
        Ok(done.rows_affected())
    }

    fn now_ms() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

#[async_trait]
impl CommandDeduplicator for SqliteDeduplicator {
    /// Runs `SELECT 1` on the database that holds the keys: down when a
    /// `begin` could not reach it now.
    #[tracing::instrument(level = "debug", name = "es.sqlite.dedup.check", skip_all)]
    async fn check(&self) -> Result<(), DedupError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable("check"))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.dedup.begin", skip(self))]
    async fn begin(&self, key: &str) -> Result<DedupStatus, DedupError> {
        let now = Self::now_ms();
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable("begin dedup transaction"))?;
        let row = sqlx::query("SELECT outcome, since_ms FROM dedup_keys WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable("read dedup key"))?;
        if let Some(row) = row {
            let outcome: Option<String> = row.try_get(0).map_err(unavailable("decode dedup key"))?;
            let since: i64 = row.try_get(1).map_err(unavailable("decode dedup key"))?;
            let age = now.saturating_sub(since);
            match outcome {
                Some(text) if age < millis(self.window) => {
                    let value = serde_json::from_str(&text).map_err(|e| DedupError::Unavailable {
                        operation: "decode dedup outcome",
                        source: Box::new(e),
                    })?;
                    return Ok(DedupStatus::Completed(value));
                }
                None if age < millis(self.in_flight_ttl) => return Ok(DedupStatus::InProgress),
                // Expired outcome, or an in-flight key whose owner died.
                _ => {}
            }
        }
        let claim = DedupClaim::new();
        sqlx::query(
            "INSERT INTO dedup_keys (key, outcome, since_ms, claim) VALUES (?, NULL, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET outcome = NULL, since_ms = excluded.since_ms, claim = excluded.claim",
        )
        .bind(key)
        .bind(now)
        .bind(claim.as_str())
        .execute(&mut *tx)
        .await
        .map_err(unavailable("start dedup key"))?;
        tx.commit().await.map_err(unavailable("commit dedup key"))?;
        Ok(DedupStatus::Started(claim))
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.dedup.complete", skip(self, outcome))]
    async fn complete(&self, key: &str, claim: &DedupClaim, outcome: &Value) -> Result<(), DedupError> {
        let now = Self::now_ms();
        // Stores the outcome over the claim's own mark or a free key;
        // updates no row when another mark or an outcome is live.
        let text = outcome.to_string();
        let stored = sqlx::query(
            "INSERT INTO dedup_keys AS d (key, outcome, since_ms, claim) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (key) DO UPDATE SET outcome = excluded.outcome, since_ms = excluded.since_ms, \
             claim = excluded.claim \
             WHERE (d.outcome IS NULL AND d.claim = excluded.claim) \
                OR (d.outcome IS NOT NULL AND d.since_ms <= ?3 - ?5) \
                OR (d.outcome IS NULL AND d.since_ms <= ?3 - ?6)",
        )
        .bind(key)
        .bind(&text)
        .bind(now)
        .bind(claim.as_str())
        .bind(millis(self.window))
        .bind(millis(self.in_flight_ttl))
        .execute(&self.pool)
        .await
        .map_err(unavailable("complete dedup key"))?;
        if stored.rows_affected() == 0 {
            // Kept already (a retried call) unless the outcome differs.
            let kept: Option<Option<String>> = sqlx::query_scalar("SELECT outcome FROM dedup_keys WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable("read dedup key"))?;
            return match kept.flatten() {
                Some(kept) if kept == text => Ok(()),
                _ => Err(DedupError::ClaimLost { key: key.to_owned() }),
            };
        }
        if self.completions.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1
            && !self.purging.swap(true, Ordering::AcqRel)
        {
            // Off the caller's path: the purge is a write, and waits its turn
            // behind the appends.
            let this = self.clone();
            tokio::spawn(async move {
                match this.purge_expired().await {
                    Ok(n) if n > 0 => tracing::debug!(purged = n, "expired idempotency keys deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not purge expired idempotency keys"),
                }
                this.purging.store(false, Ordering::Release);
            });
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.dedup.abandon", skip(self))]
    async fn abandon(&self, key: &str, claim: &DedupClaim) -> Result<(), DedupError> {
        sqlx::query("DELETE FROM dedup_keys WHERE key = ? AND outcome IS NULL AND claim = ?")
            .bind(key)
            .bind(claim.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable("abandon dedup key"))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.dedup.renew", skip(self))]
    async fn renew(&self, key: &str, claim: &DedupClaim) -> Result<bool, DedupError> {
        let now = Self::now_ms();
        // The claim's own live mark starts again.
        let renewed = sqlx::query(
            "UPDATE dedup_keys SET since_ms = ?1 WHERE key = ?2 AND outcome IS NULL AND claim = ?3 AND since_ms > ?1 - ?4",
        )
        .bind(now)
        .bind(key)
        .bind(claim.as_str())
        .bind(millis(self.in_flight_ttl))
        .execute(&self.pool)
        .await
        .map_err(unavailable("renew dedup key"))?;
        Ok(renewed.rows_affected() == 1)
    }
}
