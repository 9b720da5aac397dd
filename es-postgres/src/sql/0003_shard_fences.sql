-- The fence of each shard: the highest fencing token a shard owner has
-- raised it to. A fenced append is stored only while its token is at
-- least the fence.
CREATE TABLE IF NOT EXISTS {schema}.shard_fences (
    shard     INTEGER     NOT NULL PRIMARY KEY,
    token     BIGINT      NOT NULL,
    raised_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The fence lock: every fenced append statement takes it shared (held
-- until its transaction ends; `pg_advisory_xact_lock_shared` on
-- hashtext('{schema}.shard_fences') and -1, before anything else of the
-- check), a raise takes it exclusively. One lock for all shards: appends
-- pay one lock whatever shards they write, and raises, which are rare,
-- wait for every fenced append in flight.
--
-- Having the lock, the statement reads the fences through these volatile
-- functions, whose query takes a fresh snapshot: an append that waited for
-- a raise reads the raised token, not what the statement's own snapshot
-- (taken before the wait) shows.

-- The fence of one shard (0 without one).
CREATE OR REPLACE FUNCTION {schema}.shard_fence_of(p_shard INTEGER)
RETURNS BIGINT LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN coalesce((SELECT f.token FROM {schema}.shard_fences f WHERE f.shard = p_shard), 0);
END
$$;

-- The fences of shards 0 up to the highest of `p_shards`, indexed by
-- shard + 1 (0 where a shard has none).
CREATE OR REPLACE FUNCTION {schema}.shard_fences_upto(p_shards INTEGER[])
RETURNS BIGINT[] LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN coalesce((
        SELECT array_agg(coalesce(f.token, 0) ORDER BY g.n)
        FROM generate_series(0, coalesce((SELECT max(x) FROM unnest(p_shards) AS x), -1)) AS g(n)
        LEFT JOIN {schema}.shard_fences f ON f.shard = g.n
    ), '{}');
END
$$;
