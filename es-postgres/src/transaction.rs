//! Appending inside a caller's own transaction.

use es_core::backend::check_replay;
use es_core::{AppendResult, ExpectedVersion, NewEvent, StoreError, StreamId};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::batcher::{stored_slots, Columns};
use crate::column::decoded;
use crate::error::backend;
use crate::sql::Sql;
use crate::PostgresEventStore;

impl PostgresEventStore {
    /// Appends events inside the caller's transaction (no batching), so
    /// they commit or roll back together with the caller's other writes.
    ///
    /// Same guarantees as [`EventStore::append`](es_core::EventStore::append);
    /// a failed append leaves the transaction usable (it runs under a
    /// savepoint). The events become visible to readers of the global log
    /// when the transaction commits, in position order — a reader never
    /// skips them even if later appends commit first.
    ///
    /// ```no_run
    /// # async fn demo(store: es_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use es_core::{ExpectedVersion, NewEvent, StreamId};
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("UPDATE app.settings SET value = 'x'").execute(&mut *tx).await?;
    /// store
    ///     .append_in_transaction(&mut tx, "setting", &StreamId::from("s-1"), ExpectedVersion::Any,
    ///         vec![NewEvent::new("SettingChanged", serde_json::json!({"value": "x"}))])
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", name = "es.pg.append_in_transaction", skip_all, fields(stream_id = %stream_id))]
    pub async fn append_in_transaction(
        &self,
        conn: &mut PgConnection,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        crate::sql::check_rows(stream_id, events.len())?;
        es_core::backend::validate_append(stream_id, &events)?;
        let sql = &self.inner.sql;
        let mut attempt = 0;
        let mut current = stream_version(conn, sql, stream_id).await?;
        loop {
            attempt += 1;
            let base = match expected {
                ExpectedVersion::Exact(v) => v,
                ExpectedVersion::NoStream => 0,
                ExpectedVersion::StreamExists if current == 0 => {
                    return Err(StoreError::Conflict {
                        stream_id: stream_id.clone(),
                        expected,
                        actual: 0,
                    })
                }
                ExpectedVersion::Any | ExpectedVersion::StreamExists => current,
            };
            sqlx::query("SAVEPOINT es_append")
                .execute(&mut *conn)
                .await
                .map_err(|e| backend("savepoint", e))?;
            let n = events.len();
            let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
            let mut columns = Columns::default();
            columns.push(stream_type, stream_id, base, &events);
            let q = columns.bind(sqlx::query(&sql.append_in_transaction));
            let inserted = match q.fetch_all(&mut *conn).await {
                Ok(rows) => rows,
                Err(e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT es_append")
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| backend("rollback to savepoint", e))?;
                    if crate::error::sqlstate(&e).as_deref() != Some(crate::error::UNIQUE_VIOLATION) {
                        return Err(backend("append", e));
                    }
                    Vec::new()
                }
            };
            if inserted.len() == n {
                sqlx::query("RELEASE SAVEPOINT es_append")
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| backend("release savepoint", e))?;
                // Delivered to LISTENing readers when the caller commits.
                sqlx::query(&sql.notify)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| backend("notify", e))?;
                let mut positions = std::collections::HashMap::new();
                for row in &inserted {
                    let id: Uuid = row.try_get(0).map_err(|e| backend("decode", e))?;
                    let p = row.try_get(1).and_then(decoded).map_err(|e| backend("decode", e))?;
                    positions.insert(id, p);
                }
                return Ok(AppendResult {
                    first_version: base + 1,
                    new_version: base + n as u64,
                    positions: ids.iter().filter_map(|id| positions.get(id).copied()).collect(),
                });
            }
            // Nothing of this attempt is kept: end its savepoint, so that
            // attempts do not nest.
            sqlx::query("RELEASE SAVEPOINT es_append")
                .execute(&mut *conn)
                .await
                .map_err(|e| backend("release savepoint", e))?;
            let stored = sqlx::query(&sql.find_events)
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| backend("check replay", e))?;
            if !stored.is_empty() {
                let slots = stored_slots(&stored, &ids);
                if let Some(result) = check_replay(stream_id, expected, &events, &slots)? {
                    return Ok(result);
                }
            }
            let actual = stream_version(conn, sql, stream_id).await?;
            // `Any` (and `StreamExists` on a stream that exists) never
            // conflicts: a writer that took the version first, and whose
            // commit this statement waited for, is appended after.
            let retry = match expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::StreamExists => actual > 0,
                _ => false,
            };
            if !retry || attempt >= ANY_ATTEMPTS || actual == current {
                return Err(StoreError::Conflict {
                    stream_id: stream_id.clone(),
                    expected,
                    actual,
                });
            }
            current = actual;
        }
    }
}

/// The stream's version as `conn` sees it now.
async fn stream_version(conn: &mut PgConnection, sql: &Sql, stream_id: &StreamId) -> Result<u64, StoreError> {
    let version: i64 = sqlx::query_scalar(&sql.stream_version)
        .bind(stream_id.as_str())
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| backend("stream version", e))?;
    Ok(version.max(0) as u64)
}

/// Attempts of an `Any` append in a transaction that lost its version to a
/// concurrent writer (each re-reads the stream's version).
const ANY_ATTEMPTS: u32 = 10;
