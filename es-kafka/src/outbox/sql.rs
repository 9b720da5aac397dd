//! The outbox poller's statements, built once per schema.

/// Columns read from an outbox row, in the order `row::OutboxRow` decodes them.
const ROW_COLUMNS: &str = "r.global_position, r.event_id, r.stream_id, r.stream_type, r.version, r.event_type, \
     r.schema_version, r.payload, r.metadata, r.recorded_at, r.created_at, r.attempts, r.parked_at";

#[derive(Debug, Clone)]
pub(crate) struct OutboxSql {
    pub(crate) migrate: Vec<String>,
    pub(crate) custom_plans: &'static str,
    pub(crate) window: String,
    pub(crate) lock_heads: String,
    pub(crate) rows: String,
    pub(crate) mark_published: String,
    pub(crate) delete_published: String,
    pub(crate) record_failures: String,
    pub(crate) purge: String,
    pub(crate) unpark: String,
    pub(crate) hold_lock: String,
    pub(crate) hold: String,
    pub(crate) release: String,
    pub(crate) counts: String,
    pub(crate) parked: String,
}

impl OutboxSql {
    pub(crate) fn new(s: &str) -> Self {
        // The first key of the streams' advisory locks (the second is the
        // stream id's hash): one class per schema.
        let lock_class = format!("hashtext('{s}.outbox')");
        // Holding a blocked stream's rows and releasing them when its
        // parked row is released take this lock of the stream (a class of
        // its own: a poller owning the stream does not wait for it), so a
        // hold never reads a parked row that a release has just freed.
        let hold_class = format!("hashtext('{s}.outbox.held')");
        Self {
            migrate: vec![
                // A stream's oldest unpublished row (its head) in one probe.
                format!(
                    "CREATE INDEX IF NOT EXISTS outbox_unpublished_stream ON {s}.outbox (stream_id, version) \
                     WHERE published_at IS NULL"
                ),
                // Streams blocked behind a parked row: a tiny index.
                format!(
                    "CREATE INDEX IF NOT EXISTS outbox_parked_stream ON {s}.outbox (stream_id) \
                     WHERE parked_at IS NOT NULL AND published_at IS NULL"
                ),
                // Published rows leave the partial indexes only when vacuum
                // removes their entries: vacuum the table after a few
                // thousand changes, not after 20% of it, and at full speed.
                format!(
                    "ALTER TABLE {s}.outbox SET (autovacuum_vacuum_scale_factor = 0, \
                     autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_insert_scale_factor = 0, \
                     autovacuum_vacuum_insert_threshold = 20000, autovacuum_vacuum_cost_delay = 0)"
                ),
            ],
            // A claim costs O(batch) whatever the backlog, in three steps
            // (`OutboxPoller::claim` drives them, with custom plans: a
            // generic plan made while the table was empty walks the whole
            // backlog once the table is large):
            // 1. `window`: the streams of the oldest $2 pending rows after
            //    position $1 (the `outbox_pending` partial index), oldest
            //    first, with the window's row count and last position (to
            //    look further when other pollers own all of them), and
            //    whether a parked row blocks the stream (one probe of
            //    `outbox_parked_stream` per stream). The rows of a blocked
            //    stream are then held (`hold`): they leave the pending
            //    index, so a parked stream's backlog is walked once, not
            //    by every claim;
            custom_plans: "SET LOCAL plan_cache_mode = force_custom_plan",
            window: format!(
                "SELECT w.stream_id, min(w.global_position) AS first, count(*) AS n, max(w.global_position) AS last, \
                        EXISTS (SELECT 1 FROM {s}.outbox b WHERE b.stream_id = w.stream_id \
                                AND b.parked_at IS NOT NULL AND b.published_at IS NULL) AS blocked \
                 FROM (SELECT o.stream_id, o.global_position FROM {s}.outbox o \
                       WHERE o.published_at IS NULL AND o.parked_at IS NULL AND o.held_at IS NULL \
                         AND o.global_position > $1 \
                       ORDER BY o.global_position LIMIT $2) w \
                 GROUP BY w.stream_id ORDER BY first"
            ),
            // 2. `lock_heads`: each candidate stream's oldest unpublished row
            //    (one probe of `outbox_unpublished_stream`), oldest first,
            //    unless parked; the stream's advisory lock taken unless
            //    another poller holds it, until $2 are taken. Holding it is
            //    owning the stream until the claim ends. An advisory lock,
            //    not a row lock: a row lock gives the claim a transaction
            //    id for as long as Kafka takes to acknowledge, and every
            //    reader of the global log waits behind the oldest running
            //    transaction id (es-postgres's gap-safe reads), so a broker
            //    outage would stall them too;
            lock_heads: format!(
                "WITH heads AS MATERIALIZED ( \
                   SELECT c.stream_id, h.global_position FROM unnest($1::text[]) AS c(stream_id) \
                   CROSS JOIN LATERAL ( \
                     SELECT p.global_position, p.parked_at FROM {s}.outbox p \
                     WHERE p.stream_id = c.stream_id AND p.published_at IS NULL \
                     ORDER BY p.version LIMIT 1) h \
                   WHERE h.parked_at IS NULL) \
                 SELECT o.stream_id FROM (SELECT stream_id FROM heads ORDER BY global_position OFFSET 0) o \
                 WHERE pg_try_advisory_xact_lock({lock_class}, hashtext(o.stream_id)) \
                 LIMIT $2"
            ),
            // 3. `rows`: per owned stream, up to $2 unpublished rows in
            //    version order. A statement of its own, so a fresh
            //    snapshot: a poller that owned a stream before this claim
            //    released it at its commit, and what it marked is seen.
            rows: format!(
                "SELECT {ROW_COLUMNS} FROM unnest($1::text[]) WITH ORDINALITY AS w(stream_id, ord) \
                 CROSS JOIN LATERAL ( \
                   SELECT * FROM {s}.outbox r WHERE r.stream_id = w.stream_id AND r.published_at IS NULL \
                   ORDER BY r.version LIMIT $2) r \
                 ORDER BY w.ord, r.version"
            ),
            mark_published: format!(
                "UPDATE {s}.outbox SET published_at = now(), last_error = NULL WHERE global_position = ANY($1)"
            ),
            delete_published: format!("DELETE FROM {s}.outbox WHERE global_position = ANY($1)"),
            // $1 positions, $2 errors, $3 attempts before parking.
            record_failures: format!(
                "UPDATE {s}.outbox o SET attempts = o.attempts + 1, last_error = f.error, \
                   parked_at = CASE WHEN o.attempts + 1 >= $3 THEN now() END \
                 FROM unnest($1::bigint[], $2::text[]) AS f(position, error) \
                 WHERE o.global_position = f.position \
                 RETURNING o.parked_at IS NOT NULL"
            ),
            // $1 age in seconds, $2 rows per statement.
            purge: format!(
                "DELETE FROM {s}.outbox WHERE global_position IN ( \
                   SELECT global_position FROM {s}.outbox WHERE published_at IS NOT NULL \
                   AND published_at < now() - make_interval(secs => $1) LIMIT $2)"
            ),
            // $1 position; returns the row's stream, for `release`.
            unpark: format!(
                "UPDATE {s}.outbox SET parked_at = NULL, attempts = 0 \
                 WHERE global_position = $1 AND parked_at IS NOT NULL RETURNING stream_id"
            ),
            // $1 streams: their hold locks, in the order of the locks' keys
            // (two holds never wait for each other in a circle).
            hold_lock: format!(
                "SELECT count(pg_advisory_xact_lock({hold_class}, k.key)) \
                 FROM (SELECT DISTINCT hashtext(l.stream_id) AS key FROM unnest($1::text[]) AS l(stream_id) \
                       ORDER BY 1 OFFSET 0) k"
            ),
            // $1 streams: their pending rows, if a parked row still blocks
            // the stream (a statement after the lock: a fresh snapshot).
            hold: format!(
                "UPDATE {s}.outbox o SET held_at = now() \
                 WHERE o.stream_id = ANY($1) AND o.published_at IS NULL AND o.parked_at IS NULL \
                   AND o.held_at IS NULL \
                   AND EXISTS (SELECT 1 FROM {s}.outbox b WHERE b.stream_id = o.stream_id \
                               AND b.parked_at IS NOT NULL AND b.published_at IS NULL)"
            ),
            // $1 stream: its held rows back into the pending index once no
            // parked row blocks it.
            release: format!(
                "UPDATE {s}.outbox o SET held_at = NULL \
                 WHERE o.stream_id = $1 AND o.held_at IS NOT NULL AND o.published_at IS NULL \
                   AND NOT EXISTS (SELECT 1 FROM {s}.outbox b WHERE b.stream_id = o.stream_id \
                                   AND b.parked_at IS NOT NULL AND b.published_at IS NULL)"
            ),
            counts: format!(
                "SELECT count(*) FILTER (WHERE parked_at IS NULL), count(*) FILTER (WHERE parked_at IS NOT NULL), \
                        count(*) FILTER (WHERE held_at IS NOT NULL AND parked_at IS NULL), \
                        min(created_at) FILTER (WHERE parked_at IS NULL) \
                 FROM {s}.outbox WHERE published_at IS NULL"
            ),
            parked: format!(
                "SELECT global_position, stream_id, version, event_type, attempts, coalesce(last_error, ''), parked_at \
                 FROM {s}.outbox WHERE published_at IS NULL AND parked_at IS NOT NULL \
                 ORDER BY global_position LIMIT $1"
            ),
        }
    }
}
