//! Every SQL statement of the event log, and the encoding of timestamps.
//!
//! One database file holds one store, so the statements are constants
//! (es-postgres builds its statements per schema instead).

use chrono::{DateTime, Utc};

/// A page of events as one JSON array, built by SQLite: one row and one
/// value per query instead of a row per event (sqlx hands every row from
/// the connection's thread to the caller's, which cost more than SQLite's
/// work). Each element is `[global_position, stream_id, version,
/// stream_type, event_id (hex), event_type, schema_version, recorded_at,
/// payload is JSON (1/0), metadata is JSON (1/0), payload, metadata]`,
/// decoded by [`crate::store`]; `$from` selects the rows, `$order` orders
/// the array.
macro_rules! event_page {
    ($order:literal, $from:literal) => {
        concat!(
            "SELECT coalesce(json_group_array(json_array(global_position, stream_id, version, stream_type, \
             hex(event_id), event_type, schema_version, recorded_at, json_valid(payload), json_valid(metadata), \
             CASE WHEN json_valid(payload) THEN json(payload) END, \
             CASE WHEN json_valid(metadata) THEN json(metadata) END) ORDER BY ",
            $order,
            "), '[]') FROM (",
            $from,
            ")"
        )
    };
}

/// Most events one INSERT statement writes (9 parameters each, well
/// below SQLite's limit of 32,766); longer appends take several.
pub(crate) const INSERT_CHUNK: usize = 1000;

/// Inserts `rows` events of one stream in one statement, in version order
/// (parameters `?1..?9` for the first row, `?10..?18` for the second, …).
/// Their positions are consecutive: the statement's rowids, assigned in
/// that order by the one writer. With `checked`, the rows go in only if
/// the stream is at the version before the first row's (`?2 - 1`): the
/// check and the insert in one statement, all rows or none.
pub(crate) fn insert_events(rows: usize, checked: bool) -> String {
    let mut sql = String::with_capacity(200 + rows * 48);
    sql.push_str(
        "INSERT INTO events (stream_id, version, stream_type, event_id, event_type, schema_version, payload, \
         metadata, recorded_at) SELECT * FROM (VALUES ",
    );
    for row in 0..rows {
        let p = row * 9;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 1..=9 {
            if column > 1 {
                sql.push_str(", ");
            }
            sql.push('?');
            sql.push_str(&(p + column).to_string());
        }
        sql.push(')');
    }
    sql.push(')');
    if checked {
        sql.push_str(" WHERE coalesce((SELECT max(version) FROM events WHERE stream_id = ?1), 0) = ?2 - 1");
    }
    sql.push_str(" ORDER BY 2");
    sql
}

/// Inserts the events of several appends to distinct streams in one
/// statement: 10 parameters per row (the 9 columns, then the version the
/// row's append expects its stream at); a row goes in only if its stream
/// is at that version. The check reads the table as it was before the
/// statement (SQLite stages the rows first when the SELECT reads the
/// table it inserts into), so an append's rows go in all or none. Returns
/// `(event_id, global_position)` of every row stored.
pub(crate) fn insert_appends(rows: usize) -> String {
    let mut sql = String::with_capacity(300 + rows * 56);
    sql.push_str(
        "INSERT INTO events (stream_id, version, stream_type, event_id, event_type, schema_version, payload, \
         metadata, recorded_at) SELECT r.column1, r.column2, r.column3, r.column4, r.column5, r.column6, \
         r.column7, r.column8, r.column9 FROM (VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let params: Vec<String> = (1..=10).map(|c| format!("?{}", row * 10 + c)).collect();
        sql.push('(');
        sql.push_str(&params.join(", "));
        sql.push(')');
    }
    sql.push_str(
        ") AS r WHERE coalesce((SELECT max(e.version) FROM events e WHERE e.stream_id = r.column1), 0) = r.column10 \
         ORDER BY r.column1, r.column2 RETURNING event_id, global_position",
    );
    sql
}

/// A stream's version: one probe of the (stream_id, version) index.
pub(crate) const STREAM_VERSION: &str = "SELECT coalesce((SELECT max(version) FROM events WHERE stream_id = ?1), 0)";

/// Where an event id is stored, for the replay check.
pub(crate) const FIND_SLOT: &str = "SELECT stream_id, version, global_position FROM events WHERE event_id = ?1";

/// A page of a stream, from a version.
pub(crate) const READ_STREAM: &str = event_page!(
    "version",
    "SELECT * FROM events WHERE stream_id = ?1 AND version >= ?2 ORDER BY version LIMIT ?3"
);

/// A page of the global log after a position, filtered by JSON arrays of
/// event and stream types (NULL: all) so that one statement serves every
/// filter.
pub(crate) const READ_ALL: &str = event_page!(
    "global_position",
    "SELECT * FROM events WHERE global_position > ?1 \
       AND (?3 IS NULL OR event_type IN (SELECT value FROM json_each(?3))) \
       AND (?4 IS NULL OR stream_type IN (SELECT value FROM json_each(?4))) \
     ORDER BY global_position LIMIT ?2"
);

/// The event with an id, as a page of at most one.
pub(crate) const FIND_EVENT: &str = event_page!("global_position", "SELECT * FROM events WHERE event_id = ?1");

/// The last committed position (the rowid's maximum: one probe).
pub(crate) const HEAD: &str = "SELECT coalesce((SELECT max(global_position) FROM events), 0)";

/// Microseconds since the Unix epoch, as timestamps are stored.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The timestamp of stored microseconds (`None` when out of range).
pub(crate) fn from_micros(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
}

/// A value read from an INTEGER column as the unsigned number es-core uses.
pub(crate) fn unsigned(v: i64) -> u64 {
    v.max(0) as u64
}

/// An es-core number as an SQLite INTEGER.
pub(crate) fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::ConnectOptions;

    /// Reading a stream, the log, an event by id and a stream's version
    /// are served by the primary key or an index, not by scanning the
    /// events table.
    #[tokio::test]
    async fn reads_are_served_by_indexes() {
        let options: sqlx::sqlite::SqliteConnectOptions = "sqlite::memory:".parse().unwrap();
        let mut conn = options.connect().await.unwrap();
        sqlx::raw_sql(include_str!("sql/0001_events.sql"))
            .execute(&mut conn)
            .await
            .unwrap();
        for (what, statement) in [
            ("read stream", READ_STREAM),
            ("stream version", STREAM_VERSION),
            ("find event", FIND_EVENT),
            ("find slot", FIND_SLOT),
            ("read all", READ_ALL),
            ("head", HEAD),
            ("checked insert", &insert_events(2, true)),
            ("group insert", &insert_appends(2)),
        ] {
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {statement}"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            let details: Vec<&str> = plan.iter().map(|(_, _, _, d)| d.as_str()).collect();
            let events: Vec<&&str> = details
                .iter()
                .filter(|d| d.contains("events") && !d.contains("json_each"))
                .collect();
            assert!(!events.is_empty(), "{what}: {details:?}");
            for d in events {
                assert!(
                    d.starts_with("SEARCH") || d.contains("USING INTEGER PRIMARY KEY") || d.contains("INDEX"),
                    "{what} scans the events table: {details:?}"
                );
            }
        }
    }

    #[test]
    fn timestamps_keep_microseconds() {
        let t = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        assert_eq!(from_micros(micros(t)), Some(t));
        assert_eq!(unsigned(-3), 0);
        assert_eq!(signed(u64::MAX), i64::MAX);
    }
}
