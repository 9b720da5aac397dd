-- The event log. One row per event; STRICT tables refuse values of the
-- wrong type. Timestamps are microseconds since the Unix epoch (UTC).
--
-- global_position is the rowid: assigned by the one writer inside its
-- write transaction, above every position already committed, so
-- positions grow in commit order (see the crate docs, "A log readers
-- never skip"). AUTOINCREMENT: a position is never handed out twice, even
-- if the newest rows were deleted by hand.
CREATE TABLE IF NOT EXISTS events (
    global_position INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0),
    stream_type     TEXT    NOT NULL,
    event_id        BLOB    NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at     INTEGER NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
) STRICT;

CREATE TABLE IF NOT EXISTS snapshots (
    stream_id      TEXT    NOT NULL PRIMARY KEY,
    stream_type    TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    taken_at       INTEGER NOT NULL
) STRICT;

-- last_error / failed_at: why a projection's runner stopped (cleared by
-- its next page), for operators.
CREATE TABLE IF NOT EXISTS checkpoints (
    projection TEXT    NOT NULL PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_error TEXT,
    failed_at  INTEGER
) STRICT;

CREATE TABLE IF NOT EXISTS dead_letters (
    projection      TEXT    NOT NULL,
    global_position INTEGER NOT NULL,
    stream_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    event_id        BLOB    NOT NULL,
    event_type      TEXT    NOT NULL,
    error           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    failed_at       INTEGER NOT NULL,
    PRIMARY KEY (projection, global_position)
) STRICT;
