-- The fast claim as a function, so its plan is made once per connection instead of on every
-- claim. As a prepared statement PostgreSQL planned it anew each time (a custom plan: its
-- generic plan looked costlier), and planning took longer than running it: 0.25 ms against
-- 0.18 ms for a 10-job claim. PL/pgSQL keeps one plan per statement per session; the SET
-- clauses make it the generic plan, and pin it to the ordered index walks below whatever the
-- table held when it was made (planned on an empty table, the generic plan scanned and sorted
-- the whole table: 240 ms per claim once it held 200,000 rows).
--
-- Claim up to p_limit runnable jobs of the queues p_queues for worker p_worker, highest
-- priority first, then oldest scheduled_at, skipping the job types in p_skip_types (claimed
-- apart because of their limits) and types paused for upstream back-pressure (a claim of one
-- type alone is claim_batch_of_type in sql/queries/jobs.sql). How it walks
-- background_jobs_claim_idx (queue, priority DESC, scheduled_at, id):
-- * one walk per queue (queue = q, not queue = ANY): only an equality on the leading column lets
--   the index hand rows over in claim order, instead of sorting every pending row;
-- * within a queue, one walk per priority level present (a skip scan, levels found by a
--   recursive probe): with the level fixed, `scheduled_at <= now()` bounds the index range, so
--   jobs delayed into the future are never read. Walking (priority, scheduled_at) in one pass
--   read every delayed job of a level whenever fewer than p_limit were runnable (4.6 ms with
--   100k delayed jobs, against 0.7 ms this way). Each claim visits every priority level in
--   use, so keep levels few (tens).
-- * the skipped and paused types are one NOT IN list (a hashed subplan, built once per claim):
--   `<> ALL(array)` of a parameter has no estimate in a generic plan, and the planner then
--   sorted every pending row; NOT EXISTS did the same as an anti-join (see 0006's claim).
-- * the chosen ids reach the UPDATE as an array, so it finds them through the primary key
--   (joined to the CTE, a generic plan hashed the whole table).
-- SKIP LOCKED lets replicas claim side by side without waiting on each other. Taking the lease
-- counts the attempt. Committed like any write (flushed): a claim lost in a server crash would
-- hand the same attempt number to the next holder, and the fencing on (id, attempt) could no
-- longer tell the two runs apart.
CREATE OR REPLACE FUNCTION {schema}.claim_jobs(
    p_queues     text[],
    p_worker     text,
    p_limit      integer,
    p_lease      float8,
    p_skip_types text[]
) RETURNS TABLE (
    id             bigint,
    job_type       text,
    queue          text,
    payload        text,
    priority       integer,
    attempts       integer,
    max_attempts   integer,
    created_at     timestamptz,
    scheduled_at   timestamptz,
    dedupe_key     text,
    waited_seconds float8
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
-- the disabled scans' penalty costs would otherwise cross jit_above_cost: ~190 ms of JIT
-- compilation on every claim
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE {schema}.background_jobs AS j
    SET status = 'running',
        attempts = j.attempts + 1,
        started_at = now(),
        lease_expires_at = now() + make_interval(secs => p_lease),
        worker_id = p_worker
    WHERE j.id = ANY(ARRAY(
        SELECT c.id
        FROM unnest(p_queues) AS q(name)
        CROSS JOIN LATERAL (
            WITH RECURSIVE levels(priority) AS (
                (SELECT b.priority FROM {schema}.background_jobs AS b
                 WHERE b.status = 'pending' AND b.queue = q.name
                 ORDER BY b.priority DESC LIMIT 1)
                UNION ALL
                SELECT (SELECT b.priority FROM {schema}.background_jobs AS b
                        WHERE b.status = 'pending' AND b.queue = q.name AND b.priority < l.priority
                        ORDER BY b.priority DESC LIMIT 1)
                FROM levels AS l
                WHERE l.priority IS NOT NULL
            )
            SELECT picked.id, picked.priority, picked.scheduled_at
            FROM levels AS l
            CROSS JOIN LATERAL (
                SELECT b.id, b.priority, b.scheduled_at
                FROM {schema}.background_jobs AS b
                WHERE b.status = 'pending' AND b.queue = q.name AND b.priority = l.priority
                  AND b.scheduled_at <= now()
                  AND b.job_type NOT IN (SELECT ls.job_type FROM {schema}.jobrunner_limit_state AS ls
                                         WHERE ls.paused_until > now()
                                         UNION ALL
                                         SELECT s.job_type FROM unnest(p_skip_types) AS s(job_type))
                ORDER BY b.scheduled_at, b.id
                LIMIT p_limit
                FOR UPDATE OF b SKIP LOCKED
            ) AS picked
            WHERE l.priority IS NOT NULL
        ) AS c
        ORDER BY c.priority DESC, c.scheduled_at, c.id
        LIMIT p_limit
    ))
    RETURNING j.id, j.job_type, j.queue, j.payload::text, j.priority, j.attempts, j.max_attempts,
              j.created_at, j.scheduled_at, j.dedupe_key,
              -- clamped: a row written with scheduled_at = '-infinity' must not break every claim
              extract(epoch FROM now() - least(greatest(j.scheduled_at, '1970-01-01+00'::timestamptz),
                                               '9999-12-31+00'::timestamptz))::float8;
END
$$;

REVOKE ALL ON FUNCTION {schema}.claim_jobs(text[], text, integer, float8, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.claim_jobs(text[], text, integer, float8, text[]) TO jobrunner_worker;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.claim_jobs(text[], text, integer, float8, text[]) '
                           'FROM %I', r);
        END IF;
    END LOOP;
END
$$;
