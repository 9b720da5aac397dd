//! Every SQL statement of the backend, built once per store for its schema.

/// Columns of an event row, in the order [`crate::store`] decodes them.
const EVENT_COLUMNS: &str =
    "global_position, stream_id, version, stream_type, event_id, event_type, schema_version, payload, metadata, recorded_at";

/// The highest position a reader may see: below every position a
/// transaction still in flight can hold (its xid << 20).
/// How long (ms) a shard-fence raise may leave its transaction idle
/// before the server ends it, releasing the lock every fenced append waits
/// for: far above the microseconds a live raiser takes between its
/// statements, far below a shard lease.
pub(crate) const RAISE_IDLE_LIMIT_MS: u64 = 2_000;

const VISIBLE_LIMIT: &str = "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)";

/// Rows one transaction can number: a global position is `(xid << 20) +`
/// the row's number in its transaction, so a statement of the batch
/// writer never holds this many events, and one append fewer.
pub(crate) const ROWS_PER_TRANSACTION: usize = 1 << 20;

/// Refuses an append of more events than one transaction can number.
pub(crate) fn check_rows(stream_id: &es_core::StreamId, events: usize) -> Result<(), es_core::StoreError> {
    if events >= ROWS_PER_TRANSACTION {
        return Err(es_core::StoreError::InvalidAppend {
            stream_id: stream_id.clone(),
            reason: format!(
                "{events} events in one append; at most {} (a transaction numbers its rows below 2^20)",
                ROWS_PER_TRANSACTION - 1
            ),
        });
    }
    Ok(())
}

/// Whether `name` is a safe, unquoted PostgreSQL identifier.
pub(crate) fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 48
}

/// The statements of one schema.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) schema: String,
    pub(crate) channel: String,
    pub(crate) append: String,
    pub(crate) append_notify: String,
    pub(crate) append_one: String,
    pub(crate) append_one_notify: String,
    pub(crate) append_fenced: String,
    pub(crate) append_fenced_notify: String,
    pub(crate) append_one_fenced: String,
    pub(crate) append_one_fenced_notify: String,
    pub(crate) raise_fence: String,
    pub(crate) fence_lock: String,
    pub(crate) shard_fence: String,
    pub(crate) read_stream: String,
    pub(crate) read_all: String,
    pub(crate) append_in_transaction: String,
    pub(crate) head: String,
    pub(crate) committed_head: String,
    pub(crate) held_back: String,
    pub(crate) heads: String,
    pub(crate) stream_version: String,
    pub(crate) find_event: String,
    pub(crate) find_events: String,
    pub(crate) notify: String,
}

/// The rows of a statement appending many events: one array per column.
const MANY_ROWS: &str = "unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::uuid[], $6::text[], \
     $7::int[], $8::text[], $9::text[], $10::timestamptz[]) \
     WITH ORDINALITY AS i(stream_id, version, base, stream_type, event_id, event_type, schema_version, \
                          payload, metadata, recorded_at, ord)";

/// [`MANY_ROWS`] with each row's shard fence (NULL for unfenced appends).
const MANY_ROWS_FENCED: &str = "unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::uuid[], $6::text[], \
     $7::int[], $8::text[], $9::text[], $10::timestamptz[], $11::int[], $12::bigint[]) \
     WITH ORDINALITY AS i(stream_id, version, base, stream_type, event_id, event_type, schema_version, \
                          payload, metadata, recorded_at, shard, token, ord)";

/// One row given as plain parameters.
const ONE_ROW: &str = "$1::text AS stream_id, $2::bigint AS version, $3::bigint AS base, $4::text AS stream_type, \
     $5::uuid AS event_id, $6::text AS event_type, $7::int AS schema_version, $8::text AS payload, \
     $9::text AS metadata, $10::timestamptz AS recorded_at";

impl Sql {
    pub(crate) fn new(schema: &str, outbox: bool) -> Self {
        let s = schema;
        // One statement appends every event of a batch of appends: rows of
        // an append are inserted only if the stream's current version (one
        // backward probe of the (stream_id, version) index) is the append's
        // expected version; the same test holds for all its rows, so an
        // append is all or nothing.
        let insert_checked = |rows: &str, offset: &str, check: &str| {
            format!(
                "INSERT INTO {s}.events ({EVENT_COLUMNS}) \
                 SELECT (pg_current_xact_id()::text::bigint << 20) + {offset}i.ord, i.stream_id, i.version, i.stream_type, \
                        i.event_id, i.event_type, i.schema_version, i.payload::jsonb, i.metadata::jsonb, i.recorded_at \
                 FROM {rows} \
                 WHERE coalesce((SELECT c.version FROM {s}.events c WHERE c.stream_id = i.stream_id \
                                 ORDER BY c.version DESC LIMIT 1), 0) = i.base{check}"
            )
        };
        let insert_at = |rows: &str, offset: &str| insert_checked(rows, offset, "");
        let insert = |rows: &str| insert_at(rows, "");
        // A fenced row also needs its token at least the shard's fence.
        // The statement first takes the fence lock shared (an uncorrelated
        // subquery, run once; the CASE makes it run before the fences are
        // read), held until the append commits, then reads the fences once
        // through a volatile function, with a fresh snapshot. A raise takes
        // the lock exclusively, so it waits for the appends in flight, and
        // an append that waited for a raise reads the raised token. No row
        // lock, no WAL.
        let locked = format!("(SELECT pg_advisory_xact_lock_shared(hashtext('{s}.shard_fences'), -1)) IS NULL");
        let fence_check = format!(
            " AND CASE WHEN {locked} THEN false ELSE (i.shard IS NULL OR \
                 i.token >= coalesce(((SELECT {s}.shard_fences_upto($11::int[])))[i.shard + 1], 0)) END"
        );
        let fence_check_one = format!(
            " AND CASE WHEN {locked} THEN false ELSE (i.shard IS NULL OR i.token >= {s}.shard_fence_of(i.shard)) END"
        );
        let fenced = |rows: &str| insert_checked(rows, "", &fence_check);
        let fenced_one = |rows: &str| insert_checked(rows, "", &fence_check_one);
        // A caller's transaction may append several times: its later
        // statements number their rows after the ones it already wrote
        // (one probe of the primary key), so positions never collide.
        let after_own_rows = format!(
            "coalesce((SELECT max(w.global_position) FROM {s}.events w \
                       WHERE w.global_position >= (pg_current_xact_id()::text::bigint << 20) \
                         AND w.global_position < ((pg_current_xact_id()::text::bigint + 1) << 20)) \
                      - (pg_current_xact_id()::text::bigint << 20), 0) + "
        );
        // Many rows come as one array per column; a lone event (the common
        // case at low load) as plain parameters, which PostgreSQL takes
        // without building and unnesting ten arrays.
        let many = insert(MANY_ROWS);
        let one = insert(&format!("(SELECT {ONE_ROW}, 1::bigint AS ord) AS i"));
        let many_fenced = fenced(MANY_ROWS_FENCED);
        let one_fenced = fenced_one(&format!(
            "(SELECT {ONE_ROW}, $11::int AS shard, $12::bigint AS token, 1::bigint AS ord) AS i"
        ));
        // Each statement also comes in a version that notifies the channel
        // (once, when it inserted rows: an uncorrelated subquery is
        // evaluated at the first returned row).
        let notify_column = format!(", (SELECT pg_notify('es_events_{s}', '')) IS NULL");
        let variants = |insert: &str| -> (String, String) {
            if outbox {
                let with = format!(
                    "WITH ins AS ({insert} RETURNING {EVENT_COLUMNS}), \
                     ob AS (INSERT INTO {s}.outbox ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM ins) \
                     SELECT event_id, global_position"
                );
                (format!("{with} FROM ins"), format!("{with}{notify_column} FROM ins"))
            } else {
                (
                    format!("{insert} RETURNING event_id, global_position"),
                    format!(
                        "WITH ins AS ({insert} RETURNING event_id, global_position) \
                         SELECT event_id, global_position{notify_column} FROM ins"
                    ),
                )
            }
        };
        let (append, append_notify) = variants(&many);
        let (append_in_transaction, _) = variants(&insert_at(MANY_ROWS, &after_own_rows));
        let (append_one, append_one_notify) = variants(&one);
        let (append_fenced, append_fenced_notify) = variants(&many_fenced);
        let (append_one_fenced, append_one_fenced_notify) = variants(&one_fenced);
        Self {
            append_fenced,
            append_fenced_notify,
            append_one_fenced,
            append_one_fenced_notify,
            // Raises the fence unless it is higher (no row back: it was),
            // under `fence_lock`.
            raise_fence: format!(
                "INSERT INTO {s}.shard_fences (shard, token) VALUES ($1, $2) \
                 ON CONFLICT (shard) DO UPDATE SET token = EXCLUDED.token, raised_at = now() \
                 WHERE {s}.shard_fences.token <= EXCLUDED.token \
                 RETURNING token"
            ),
            // Taken exclusively by a raise, in its transaction, before the
            // upsert: waits for the fenced appends in flight. Every fenced
            // append of every shard waits while it is held, so a raiser
            // that stalls before its COMMIT (a paused process, a cut
            // network) is ended by the server after
            // `RAISE_IDLE_LIMIT_MS` instead of holding the lock (one
            // simple-query message: no pause can fall between the two).
            fence_lock: format!(
                "SET LOCAL idle_in_transaction_session_timeout = {RAISE_IDLE_LIMIT_MS}; \
                 SELECT pg_advisory_xact_lock(hashtext('{s}.shard_fences'), -1)"
            ),
            shard_fence: format!("SELECT coalesce((SELECT token FROM {s}.shard_fences WHERE shard = $1), 0)"),
            schema: s.to_owned(),
            channel: format!("es_events_{s}"),
            append,
            append_notify,
            append_in_transaction,
            append_one,
            append_one_notify,
            read_stream: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
            ),
            read_all: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events \
                 WHERE global_position > $1 AND global_position < {VISIBLE_LIMIT} \
                   AND ($3::text[] IS NULL OR event_type = ANY($3)) \
                   AND ($4::text[] IS NULL OR stream_type = ANY($4)) \
                 ORDER BY global_position LIMIT $2"
            ),
            head: format!(
                "SELECT coalesce(max(global_position), 0) FROM {s}.events WHERE global_position < {VISIBLE_LIMIT}"
            ),
            committed_head: format!("SELECT coalesce(max(global_position), 0) FROM {s}.events"),
            // Committed rows at or past the limit readers stop at, oldest
            // positions first, at most $1 of them.
            held_back: format!(
                "SELECT count(*), extract(epoch FROM now() - min(h.recorded_at))::float8                  FROM (SELECT recorded_at FROM {s}.events WHERE global_position >= {VISIBLE_LIMIT}                        ORDER BY global_position LIMIT $1) h"
            ),
            heads: format!(
                "SELECT coalesce((SELECT max(global_position) FROM {s}.events WHERE global_position < {VISIBLE_LIMIT}), 0), \
                        coalesce((SELECT max(global_position) FROM {s}.events), 0)"
            ),
            stream_version: format!("SELECT coalesce(max(version), 0) FROM {s}.events WHERE stream_id = $1"),
            find_event: format!("SELECT {EVENT_COLUMNS} FROM {s}.events WHERE event_id = $1"),
            notify: format!("SELECT pg_notify('es_events_{s}', '')"),
            find_events: format!(
                "SELECT event_id, stream_id, version, global_position FROM {s}.events WHERE event_id = ANY($1)"
            ),
        }
    }

    /// A migration script with the schema and channel filled in.
    pub(crate) fn render(&self, script: &str) -> String {
        script
            .replace("{schema}", &self.schema)
            .replace("{channel}", &self.channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        assert!(valid_identifier("es"));
        assert!(valid_identifier("test_1a"));
        assert!(!valid_identifier("1abc"));
        assert!(!valid_identifier("a;drop table x"));
        assert!(!valid_identifier("Upper"));
        assert!(!valid_identifier(""));
    }

    /// The plan PostgreSQL picks for `statement` with sequential scans
    /// priced out: a predicate an index cannot serve still shows a
    /// sequential scan of the events table.
    #[cfg(feature = "testing")]
    async fn plan(store: &crate::PostgresEventStore, statement: &str, bind: impl FnOnce(&str) -> String) -> String {
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .unwrap();
        let rows: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {}", bind(statement)))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        rows.join("\n")
    }

    /// Reading a stream, the global log, an event by id and a stream's
    /// version are served by indexes of the migrated schema, not by
    /// scanning every event.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn reads_are_served_by_indexes() {
        let schema = crate::testing::fresh_schema("sqlplan");
        let store = crate::testing::store(crate::EventStoreConfig::with_schema(schema.clone()))
            .await
            .unwrap();
        let sql = Sql::new(&schema, false);
        let literal = |s: &str| {
            s.replace("$1", "'7'")
                .replace("$2", "1")
                .replace("$3", "10")
                .replace("$4", "NULL")
        };
        let statements = [
            ("read stream", sql.read_stream.clone()),
            ("stream version", sql.stream_version.clone()),
            (
                "find event",
                sql.find_event.replace("$1", "'00000000-0000-0000-0000-000000000000'"),
            ),
            (
                "read all",
                sql.read_all
                    .replace("$1", "0")
                    .replace("$2", "10")
                    .replace("$3::text[]", "NULL::text[]")
                    .replace("ANY($3)", "ANY(NULL::text[])")
                    .replace("$4::text[]", "NULL::text[]")
                    .replace("ANY($4)", "ANY(NULL::text[])"),
            ),
        ];
        for (what, statement) in statements {
            let plan = plan(&store, &statement, literal).await;
            assert!(!plan.contains("Seq Scan"), "{what} scans the events table:\n{plan}");
            assert!(plan.contains("Index"), "{what} uses no index:\n{plan}");
        }
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(store.pool())
            .await
            .unwrap();
    }
}
