-- A claim's walk of one queue: its runnable jobs in claim order (priority DESC, scheduled_at,
-- id), up to p_limit, locked for the calling claim (FOR UPDATE SKIP LOCKED: replicas claim side
-- by side without waiting on each other), leaving out the job types in p_skip_types (claimed
-- apart for their limits) and the types paused for upstream back-pressure; nothing of a paused
-- queue.
--
-- It walks background_jobs_claim_idx (queue, priority DESC, scheduled_at, id) one priority level
-- at a time, highest first, and stops once it has p_limit jobs: with the queue and the level
-- fixed, `scheduled_at <= now()` bounds the index range, so jobs delayed into the future are
-- never read, and the next level is one probe of the index. A claim visits levels until it has
-- its jobs, so keep levels few (tens).
-- The left-out types are one NOT IN list, a hashed subplan built once per statement:
-- `<> ALL(array)` of a parameter has no estimate in a generic plan, and NOT EXISTS (an
-- anti-join) is estimated at one row as soon as jobrunner_limit_state holds one; either made the
-- planner sort every pending row instead of walking the index (tests/test_query_plans.py).
-- Its plan settings are claim_jobs', which calls it.
-- requires: jobrunner_worker_only

CREATE OR REPLACE FUNCTION {schema}.claim_walk_queue(p_queue text, p_skip_types text[], p_limit integer)
RETURNS TABLE (id bigint, priority integer, scheduled_at timestamptz, payload_bytes integer, turn bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level  integer;
    v_wanted integer := p_limit;
    v_found  integer;
BEGIN
    -- a paused queue (jobrunner_queue_pauses) is not walked: the pause is a one-time filter of
    -- this first probe, one primary-key probe of the pause table
    SELECT b.priority INTO v_level FROM {schema}.background_jobs AS b
    WHERE b.status = 'pending' AND b.queue = p_queue
      AND NOT EXISTS (SELECT FROM {schema}.jobrunner_queue_pauses AS p WHERE p.queue = p_queue)
    ORDER BY b.priority DESC LIMIT 1;
    WHILE v_level IS NOT NULL AND v_wanted > 0 LOOP
        RETURN QUERY
        SELECT b.id, b.priority, b.scheduled_at, b.payload_bytes, 1::bigint
        FROM {schema}.background_jobs AS b
        WHERE b.status = 'pending' AND b.queue = p_queue AND b.priority = v_level
          AND b.scheduled_at <= now()
          AND b.job_type NOT IN (SELECT ls.job_type FROM {schema}.jobrunner_limit_state AS ls
                                 WHERE ls.paused_until > now()
                                 UNION ALL
                                 SELECT s.job_type FROM unnest(p_skip_types) AS s(job_type))
        ORDER BY b.scheduled_at, b.id
        LIMIT v_wanted
        FOR UPDATE OF b SKIP LOCKED;
        GET DIAGNOSTICS v_found = ROW_COUNT;
        v_wanted := v_wanted - v_found;
        EXIT WHEN v_wanted <= 0;
        SELECT b.priority INTO v_level FROM {schema}.background_jobs AS b
        WHERE b.status = 'pending' AND b.queue = p_queue AND b.priority < v_level
        ORDER BY b.priority DESC LIMIT 1;
    END LOOP;
END
$$;

SELECT {schema}.jobrunner_worker_only('{schema}.claim_walk_queue(text, text[], integer)');
