-- The daemon's claim of unlimited job types: up to p_limit runnable jobs of the queues p_queues
-- for worker p_worker, highest priority first, then oldest scheduled_at, skipping the job types
-- in p_skip_types (claimed apart because of their limits) and types paused for upstream
-- back-pressure. It stops adding jobs once their payloads sum past p_max_bytes
-- (JOBRUNNER_CLAIM_MAX_BYTES), always taking at least one, so that what a daemon holds at once
-- is bounded in memory however large the payloads; the running sum is a window over the rows the
-- index walk already locked. (A claim of one type alone is claim_batch_of_type in
-- sql/queries/jobs.sql.)
--
-- A function, so that its plan is made once per connection: PL/pgSQL keeps one plan per
-- statement per session, and the SET clauses make it the generic plan and pin it to the ordered
-- index walks below whatever the table held when it was planned (tests/test_query_plans.py).
-- How it walks background_jobs_claim_idx (queue, priority DESC, scheduled_at, id):
-- * one walk per queue (queue = q, not queue = ANY): only an equality on the leading column lets
--   the index hand rows over in claim order, instead of sorting every pending row;
-- * within a queue, one walk per priority level present (a skip scan, levels found by a
--   recursive probe): with the level fixed, `scheduled_at <= now()` bounds the index range, so
--   jobs delayed into the future are never read. Each claim visits every priority level in use,
--   so keep levels few (tens);
-- * the skipped and paused types are one NOT IN list (a hashed subplan, built once per claim):
--   `<> ALL(array)` of a parameter has no estimate in a generic plan, and the planner then sorts
--   every pending row; NOT EXISTS does the same as an anti-join;
-- * the chosen ids reach the UPDATE as an array, so it finds them through the primary key.
-- JIT is off: the disabled scans' penalty costs would otherwise cross jit_above_cost and compile
-- on every claim. SKIP LOCKED lets replicas claim side by side without waiting on each other.
-- Taking the lease counts the attempt. Committed like any write (flushed): a claim lost in a
-- server crash would hand the same attempt number to the next holder, and the fencing on
-- (id, attempt) could no longer tell the two runs apart.

CREATE OR REPLACE FUNCTION {schema}.claim_jobs(
    p_queues     text[],
    p_worker     text,
    p_limit      integer,
    p_lease      float8,
    p_skip_types text[],
    p_max_bytes  bigint DEFAULT 16777216
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
SET jit = off
SET search_path = pg_catalog, pg_temp
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
        SELECT w.id
        FROM (
            SELECT c.id,
                   row_number() OVER claim_order AS n,
                   sum(c.payload_bytes) OVER claim_order AS bytes_so_far
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
                SELECT picked.id, picked.priority, picked.scheduled_at, picked.payload_bytes
                FROM levels AS l
                CROSS JOIN LATERAL (
                    SELECT b.id, b.priority, b.scheduled_at, b.payload_bytes
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
            WINDOW claim_order AS (ORDER BY c.priority DESC, c.scheduled_at, c.id ROWS UNBOUNDED PRECEDING)
            ORDER BY c.priority DESC, c.scheduled_at, c.id
            LIMIT p_limit
        ) AS w
        WHERE w.n = 1 OR w.bytes_so_far <= p_max_bytes
    ))
    RETURNING j.id, j.job_type, j.queue, j.payload::text, j.priority, j.attempts, j.max_attempts,
              j.created_at, j.scheduled_at, j.dedupe_key,
              -- clamped: a row written with scheduled_at = '-infinity' must not break every claim
              extract(epoch FROM now() - least(greatest(j.scheduled_at, '1970-01-01+00'::timestamptz),
                                               '9999-12-31+00'::timestamptz))::float8;
END
$$;

REVOKE ALL ON FUNCTION {schema}.claim_jobs(text[], text, integer, float8, text[], bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.claim_jobs(text[], text, integer, float8, text[], bigint) TO jobrunner_worker;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.claim_jobs(text[], text, integer, float8, text[], bigint) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
