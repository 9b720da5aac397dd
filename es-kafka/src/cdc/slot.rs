//! The replication slot: create, inspect, peek, advance, drop.

use sqlx::{PgPool, Row};

use crate::error::CdcError;

/// One row of a peek: `(lsn as text, data)`.
pub(crate) type PeekRow = (String, String);

/// The state of the relay's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// Whether the slot exists.
    pub exists: bool,
    /// Its `confirmed_flush_lsn` (everything before is published).
    pub confirmed_flush_lsn: Option<String>,
    /// WAL bytes the slot holds back (grows while the relay is down).
    pub retained_bytes: Option<i64>,
    /// WAL bytes between the server's current position and
    /// `confirmed_flush_lsn`: what the relay still has to read.
    pub lag_bytes: Option<i64>,
}

/// Another replication slot of the cluster, as the startup check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherSlot {
    /// Its name.
    pub name: String,
    /// The database it decodes.
    pub database: Option<String>,
    /// Its output plugin.
    pub plugin: Option<String>,
    /// WAL bytes it holds back.
    pub retained_bytes: Option<i64>,
}

/// The default slot name of a deployment: `es_{database}_{schema}`,
/// lowercased, other characters as `_`, at most 48 characters (a longer
/// name keeps its start and ends in a hash of the whole). Replication
/// slots belong to the whole PostgreSQL cluster, so the database must be
/// part of the name. Names that differ only in case or punctuation
/// (`bank-prod` and `bank_prod`), or whose parts split differently
/// (database `a_b`, schema `c` and database `a`, schema `b_c`), map to
/// the same slot: the relay's start-up check refuses a slot of another
/// database ([`CdcError::SlotConflict`](crate::CdcError::SlotConflict)),
/// and such a deployment sets its own name.
///
/// ```
/// assert_eq!(es_kafka::cdc::default_slot_name("bank_prod", "bank"), "es_bank_prod_bank");
/// assert_ne!(
///     es_kafka::cdc::default_slot_name("staging", "bank"),
///     es_kafka::cdc::default_slot_name("production", "bank"),
/// );
/// ```
pub fn default_slot_name(database: &str, schema: &str) -> String {
    let raw = format!("es_{database}_{schema}");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() <= 48 {
        return clean;
    }
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let hash = raw.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}_{:016x}", &clean[..31], hash)
}

/// [`default_slot_name`] of the database `pool` connects to.
pub async fn default_slot_name_for(pool: &PgPool, schema: &str) -> Result<String, CdcError> {
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(pool)
        .await?;
    Ok(default_slot_name(&database, schema))
}

/// `(name, database, plugin, retained bytes, in this database)`.
type SlotRow = (String, Option<String>, Option<String>, Option<i64>, bool);

/// Finds the slot `slot` wherever it is in the cluster, and the other
/// logical slots that hold back more than `abandoned_bytes` of WAL.
pub(crate) async fn inspect(
    pool: &PgPool,
    slot: &str,
    abandoned_bytes: i64,
) -> Result<(Option<OtherSlot>, bool, Vec<OtherSlot>), CdcError> {
    let rows: Vec<SlotRow> = sqlx::query_as(
        "SELECT slot_name::text, database::text, plugin::text, \
                pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, database = current_database() \
         FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY slot_name",
    )
    .fetch_all(pool)
    .await?;
    let mut same = None;
    let mut here = false;
    let mut heavy = Vec::new();
    for (name, database, plugin, retained_bytes, in_this_database) in rows {
        let found = OtherSlot {
            name,
            database,
            plugin,
            retained_bytes,
        };
        if found.name == slot {
            here = in_this_database;
            same = Some(found);
        } else if found.retained_bytes.unwrap_or(0) > abandoned_bytes {
            heavy.push(found);
        }
    }
    Ok((same, here, heavy))
}

/// Creates the slot with `test_decoding` unless it exists; returns whether
/// it was created. Creating waits for running write transactions to end.
pub(crate) async fn ensure(pool: &PgPool, slot: &str) -> Result<bool, CdcError> {
    let exists: Option<String> = sqlx::query_scalar(
        "SELECT plugin::text FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    if exists.is_some() {
        return Ok(false);
    }
    sqlx::query("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'test_decoding')")
        .bind(slot)
        .fetch_one(pool)
        .await?;
    Ok(true)
}

/// Drops the slot if it exists (releases the WAL it retains).
pub(crate) async fn drop(pool: &PgPool, slot: &str) -> Result<(), CdcError> {
    sqlx::query(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
         WHERE slot_name = $1 AND database = current_database()",
    )
    .bind(slot)
    .fetch_all(pool)
    .await?;
    Ok(())
}

/// Decodes (without consuming) up to `max_changes` changes, whole
/// transactions only, with ISO timestamps in UTC.
pub(crate) async fn peek(pool: &PgPool, slot: &str, max_changes: i32) -> Result<(Vec<PeekRow>, String), CdcError> {
    let mut tx = pool.begin().await?;
    // Read before the peek, which decodes at least up to here.
    let flushed: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL TimeZone = 'UTC'").execute(&mut *tx).await?;
    sqlx::query("SET LOCAL DateStyle = 'ISO, YMD'")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, $2, \
           'include-xids', '0', 'include-timestamp', '1', 'skip-empty-xacts', '1')",
    )
    .bind(slot)
    .bind(max_changes)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let rows = rows
        .iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((rows, flushed))
}

/// Moves the slot's confirmed position to `lsn`: changes of transactions
/// committed before it are never decoded again.
pub(crate) async fn advance(pool: &PgPool, slot: &str, lsn: &str) -> Result<(), CdcError> {
    sqlx::query("SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::pg_lsn)")
        .bind(slot)
        .bind(lsn)
        .fetch_one(pool)
        .await?;
    Ok(())
}

/// The position and retained WAL of the logical replication slot `slot`
/// of the database `pool` connects to, read without a relay or a Kafka
/// client (operators' tools); `exists: false` when there is none.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), es_kafka::CdcError> {
/// let slot = es_kafka::cdc::default_slot_name_for(&pool, "bank").await?;
/// let status = es_kafka::cdc::slot_status(&pool, &slot).await?;
/// println!("{slot}: {:?} bytes behind", status.lag_bytes);
/// # Ok(()) }
/// ```
pub async fn slot_status(pool: &PgPool, slot: &str) -> Result<SlotStatus, CdcError> {
    let row: Option<(Option<String>, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT confirmed_flush_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, \
                pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
         FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((lsn, retained, lag)) => SlotStatus {
            exists: true,
            confirmed_flush_lsn: lsn,
            retained_bytes: retained,
            lag_bytes: lag,
        },
        None => SlotStatus {
            exists: false,
            confirmed_flush_lsn: None,
            retained_bytes: None,
            lag_bytes: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::default_slot_name;

    #[test]
    fn slot_names_are_valid_identifiers_unique_per_database_and_stable() {
        let long_db = "a_database_name_that_is_really_quite_long_for_a_slot";
        let a = default_slot_name(long_db, "bank");
        let b = default_slot_name(&format!("{long_db}_2"), "bank");
        assert!(a.len() <= 48 && b.len() <= 48, "{a} {b}");
        assert_ne!(a, b, "a hash of the whole name keeps long names apart");
        assert!(crate::ident::check(&a).is_ok(), "{a}");
        assert_eq!(default_slot_name("Bank-Prod", "bank"), "es_bank_prod_bank");
        // Stable across processes and versions (FNV-1a, not std's hasher).
        assert_eq!(a, "es_a_database_name_that_is_real_232dc2972b6cae68");
    }
}
