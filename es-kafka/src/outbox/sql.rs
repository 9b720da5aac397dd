//! The outbox poller's statements, built once per schema.

/// Columns read from an outbox row, in the order `row::OutboxRow` decodes them.
pub(crate) const COLUMNS: &str = "global_position, event_id, stream_id, stream_type, version, event_type, \
     schema_version, payload, metadata, recorded_at, created_at, attempts, parked_at";

#[derive(Debug, Clone)]
pub(crate) struct OutboxSql {
    pub(crate) index: String,
    pub(crate) claim: String,
    pub(crate) mark_published: String,
    pub(crate) delete_published: String,
    pub(crate) record_failures: String,
    pub(crate) purge: String,
    pub(crate) unpark: String,
    pub(crate) counts: String,
    pub(crate) parked: String,
}

impl OutboxSql {
    pub(crate) fn new(s: &str) -> Self {
        Self {
            // Finds a stream's oldest unpublished row (its head) in one probe.
            index: format!(
                "CREATE INDEX IF NOT EXISTS outbox_unpublished_stream ON {s}.outbox (stream_id, version) \
                 WHERE published_at IS NULL"
            ),
            // Locks the heads of up to $1 streams (oldest first), skipping
            // heads another poller holds: holding a stream's head is owning
            // the stream until commit, so no two pollers publish one stream
            // at once. Parked heads block their stream. Then reads up to $2
            // unpublished rows of the owned streams in version order.
            claim: format!(
                "WITH heads AS MATERIALIZED ( \
                   SELECT o.stream_id FROM {s}.outbox o \
                   WHERE o.published_at IS NULL AND o.parked_at IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM {s}.outbox p WHERE p.stream_id = o.stream_id \
                                     AND p.published_at IS NULL AND p.version < o.version) \
                   ORDER BY o.global_position LIMIT $1 \
                   FOR UPDATE OF o SKIP LOCKED) \
                 SELECT {COLUMNS} FROM {s}.outbox r \
                 WHERE r.stream_id IN (SELECT stream_id FROM heads) AND r.published_at IS NULL \
                 ORDER BY r.stream_id, r.version LIMIT $2"
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
            purge: format!(
                "DELETE FROM {s}.outbox WHERE published_at IS NOT NULL \
                 AND published_at < now() - make_interval(secs => $1)"
            ),
            unpark: format!(
                "UPDATE {s}.outbox SET parked_at = NULL, attempts = 0 \
                 WHERE global_position = $1 AND parked_at IS NOT NULL"
            ),
            counts: format!(
                "SELECT count(*) FILTER (WHERE parked_at IS NULL), count(*) FILTER (WHERE parked_at IS NOT NULL), \
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_use_the_schema_and_skip_locked_heads() {
        let sql = OutboxSql::new("bank");
        assert!(sql.claim.contains("FOR UPDATE OF o SKIP LOCKED"));
        assert!(sql.claim.contains("FROM bank.outbox o"));
        assert!(sql.index.contains("ON bank.outbox (stream_id, version)"));
        for s in [
            &sql.mark_published,
            &sql.delete_published,
            &sql.record_failures,
            &sql.purge,
            &sql.unpark,
        ] {
            assert!(s.contains("bank.outbox"), "{s}");
        }
    }
}
