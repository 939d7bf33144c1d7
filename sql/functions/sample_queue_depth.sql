-- The queue-depth sample (QueueDepthSampler: every JOBRUNNER_SAMPLE_INTERVAL, on one replica),
-- counted per status so that it reads the two partial indexes whatever the planner estimates:
-- the pending jobs by an index-only walk of background_jobs_claim_idx, the running ones through
-- background_jobs_lease_idx; no finished history is read. The SET clauses keep the planner to
-- those walks (its costs prefer a parallel scan of the whole table once many jobs wait).
-- oldest_runnable_seconds is 0 where only later-scheduled jobs wait.

CREATE OR REPLACE FUNCTION {schema}.sample_queue_depth()
RETURNS TABLE (queue text, status text, jobs bigint, oldest_runnable_seconds float8)
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
SET max_parallel_workers_per_gather = 0
SET jit = off
SET search_path = pg_catalog, pg_temp
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

-- Supabase grants its API roles every new function in public by default: take it back.
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
