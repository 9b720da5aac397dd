-- The event log. One row per event.
-- global_position = (writing transaction id << 20) + index within that
-- transaction: unique, and ordered the way readers must see events (see
-- the crate docs, "Gap-safe global log").
CREATE TABLE IF NOT EXISTS {schema}.events (
    global_position BIGINT      NOT NULL PRIMARY KEY,
    stream_id       TEXT        NOT NULL,
    version         BIGINT      NOT NULL,
    stream_type     TEXT        NOT NULL,
    event_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL,
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_version_positive CHECK (version > 0)
);

CREATE TABLE IF NOT EXISTS {schema}.snapshots (
    stream_id      TEXT        NOT NULL PRIMARY KEY,
    stream_type    TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    schema_version INTEGER     NOT NULL,
    state          JSONB       NOT NULL,
    taken_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
    projection TEXT        NOT NULL PRIMARY KEY,
    position   BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {schema}.dead_letters (
    projection      TEXT        NOT NULL,
    global_position BIGINT      NOT NULL,
    stream_id       TEXT        NOT NULL,
    version         BIGINT      NOT NULL,
    event_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    error           TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL,
    failed_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (projection, global_position)
);

-- Written in the append's own statement when the outbox is enabled; read
-- and marked by the Kafka outbox poller (es-kafka).
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    global_position BIGINT      NOT NULL PRIMARY KEY,
    event_id        UUID        NOT NULL,
    stream_id       TEXT        NOT NULL,
    stream_type     TEXT        NOT NULL,
    version         BIGINT      NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL,
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at    TIMESTAMPTZ,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    last_error      TEXT,
    parked_at       TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS outbox_pending ON {schema}.outbox (global_position)
    WHERE published_at IS NULL AND parked_at IS NULL;
