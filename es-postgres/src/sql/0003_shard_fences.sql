-- The fence of each shard: the highest fencing token a shard owner has
-- raised it to. A fenced append is stored only while its token is at
-- least the fence (checked, under a share lock of the row, by the append
-- statement itself).
CREATE TABLE IF NOT EXISTS {schema}.shard_fences (
    shard     INTEGER     NOT NULL PRIMARY KEY,
    token     BIGINT      NOT NULL,
    raised_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
