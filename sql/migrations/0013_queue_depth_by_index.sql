-- The queue-depth sample (QueueDepthSampler: every JOBRUNNER_SAMPLE_INTERVAL, on one replica)
-- as a function, so that it reads the two partial indexes whatever the planner estimates.
-- As one statement over status IN ('pending', 'running') it had no partial index to use, and
-- once many jobs waited the planner read the whole table with two parallel workers: 181 ms
-- and three busy processes for 939,200 waiting jobs, on the 2 cores the claims need, and a
-- scan that grows with the finished history too. Counted here per status: the pending jobs by
-- an index-only walk of background_jobs_claim_idx (92 ms for the same 939,200, one process;
-- no history is read), the running ones through background_jobs_lease_idx.
-- The SET clauses keep the planner to those walks: its costs preferred the parallel scan.
-- oldest_runnable_seconds is 0 where only later-scheduled jobs wait: the statement before
-- clamped the age with greatest(), which ignores a NULL, and reported 1970's age there.
CREATE OR REPLACE FUNCTION {schema}.sample_queue_depth()
RETURNS TABLE (queue text, status text, jobs bigint, oldest_runnable_seconds float8)
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
SET max_parallel_workers_per_gather = 0
SET jit = off
AS $$
    SELECT b.queue, 'pending'::text, count(*),
           CASE WHEN min(b.scheduled_at) FILTER (WHERE b.scheduled_at <= now()) IS NULL THEN 0
                -- clamped: a row written with scheduled_at = '-infinity' has no age in seconds
                ELSE extract(epoch FROM now() - greatest(
                    min(b.scheduled_at) FILTER (WHERE b.scheduled_at <= now()), '1970-01-01+00'::timestamptz))
           END::float8
    FROM {schema}.background_jobs AS b
    WHERE b.status = 'pending'
    GROUP BY b.queue
    UNION ALL
    SELECT b.queue, 'running'::text, count(*), 0::float8
    FROM {schema}.background_jobs AS b
    WHERE b.status = 'running'
    GROUP BY b.queue
$$;

REVOKE ALL ON FUNCTION {schema}.sample_queue_depth() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.sample_queue_depth() TO jobrunner_worker;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.sample_queue_depth() FROM %I', r);
        END IF;
    END LOOP;
END
$$;
