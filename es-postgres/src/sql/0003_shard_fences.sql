-- The fence of each shard: the highest fencing token a shard owner has
-- raised it to. A fenced append is stored only while its token is at
-- least the fence.
CREATE TABLE IF NOT EXISTS {schema}.shard_fences (
    shard     INTEGER     NOT NULL PRIMARY KEY,
    token     BIGINT      NOT NULL,
    raised_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The fence lock: every fenced append statement takes it shared (held
-- until its transaction ends), a raise takes it exclusively. One lock for
-- all shards: appends pay one lock whatever shards they write, and raises,
-- which are rare, wait for every fenced append in flight.
--
-- Whether an append under `p_token` may write to `p_shard` (one-row
-- statements): takes the lock, then reads the fence with a fresh snapshot
-- (a volatile function's query does), so an append in flight holds off a
-- raise, and an append that waited for a raise reads the raised token.
CREATE OR REPLACE FUNCTION {schema}.shard_fence_holds(p_shard INTEGER, p_token BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('{schema}.shard_fences'), -1);
    RETURN coalesce((SELECT f.token FROM {schema}.shard_fences f WHERE f.shard = p_shard), 0) <= p_token;
END
$$;

-- The statement-wide form, called once by a many-row append statement:
-- takes the lock, then reads every fence up to the highest shard given
-- with one fresh snapshot. Returns them indexed by shard + 1 (0 where a
-- shard has none).
CREATE OR REPLACE FUNCTION {schema}.shard_fences_for(p_shards INTEGER[])
RETURNS BIGINT[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    fences BIGINT[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('{schema}.shard_fences'), -1);
    SELECT array_agg(coalesce(f.token, 0) ORDER BY g.n) INTO fences
    FROM generate_series(0, coalesce((SELECT max(x) FROM unnest(p_shards) AS x), -1)) AS g(n)
    LEFT JOIN {schema}.shard_fences f ON f.shard = g.n;
    RETURN coalesce(fences, '{}');
END
$$;
