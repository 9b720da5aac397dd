-- Why a projection's runner stopped (cleared by its next page), for
-- operators; and which version of a blue/green projection readers see.
ALTER TABLE {schema}.checkpoints ADD COLUMN IF NOT EXISTS last_error TEXT;
ALTER TABLE {schema}.checkpoints ADD COLUMN IF NOT EXISTS failed_at TIMESTAMPTZ;

CREATE TABLE IF NOT EXISTS {schema}.projection_versions (
    name        TEXT        NOT NULL PRIMARY KEY,
    active      INTEGER     NOT NULL,
    switched_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
