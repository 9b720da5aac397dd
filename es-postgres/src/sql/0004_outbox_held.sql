-- Rows held behind a parked row of their stream. A parked row blocks its
-- stream; the rows appended behind it stay unpublished until an operator
-- releases it. Held rows leave the pending index, so the outbox poller's
-- window over pending rows does not walk a blocked stream's backlog on
-- every claim: es-kafka's poller holds them once it sees them and
-- releases them when the parked row is released.
ALTER TABLE {schema}.outbox ADD COLUMN IF NOT EXISTS held_at TIMESTAMPTZ;
DROP INDEX IF EXISTS {schema}.outbox_pending;
CREATE INDEX IF NOT EXISTS outbox_pending ON {schema}.outbox (global_position)
    WHERE published_at IS NULL AND parked_at IS NULL AND held_at IS NULL;
