-- What the Debezium connector in debezium-connector.json needs, for the
-- es-postgres schema `bank` (replace it with yours). Run once as a
-- superuser. The server must run with wal_level = logical:
--   ALTER SYSTEM SET wal_level = logical;  -- then restart PostgreSQL
--
-- The events table is insert-only, so the default replica identity (the
-- primary key, global_position) is all logical decoding needs; it is set
-- explicitly so that a later change to the table does not silently drop it.
ALTER TABLE bank.events REPLICA IDENTITY DEFAULT;

-- Only inserts of the event log are published (no outbox table needed:
-- the log itself is the outbox; Debezium's outbox router reads it).
CREATE PUBLICATION es_events_bank FOR TABLE bank.events WITH (publish = 'insert');
