-- A claim's walk of one job type: its runnable jobs in the queues p_queues, in claim order
-- (priority DESC, scheduled_at, id), up to p_limit, locked for the calling claim (FOR UPDATE
-- SKIP LOCKED), none of a paused queue (a hashed NOT IN over jobrunner_queue_pauses, built once
-- per statement). The claims of limited types take this walk.
--
-- The same level-by-level walk as claim_walk_queue, over background_jobs_type_claim_idx
-- (job_type, priority DESC, scheduled_at, id): with the type and the level fixed,
-- `scheduled_at <= now()` bounds the index range. So a rare type is found without walking past
-- the other types' jobs, and a common one without sorting its backlog. The queue is a filter:
-- a type lives in one queue or few. Its plan settings are claim_jobs', which calls it.
-- requires: jobrunner_worker_only

CREATE OR REPLACE FUNCTION {schema}.claim_walk_type(p_job_type text, p_queues text[], p_limit integer)
RETURNS TABLE (id bigint, priority integer, scheduled_at timestamptz, payload_bytes integer, turn bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level  integer;
    v_wanted integer := p_limit;
    v_found  integer;
BEGIN
    SELECT b.priority INTO v_level FROM {schema}.background_jobs AS b
    WHERE b.status = 'pending' AND b.job_type = p_job_type
    ORDER BY b.priority DESC LIMIT 1;
    WHILE v_level IS NOT NULL AND v_wanted > 0 LOOP
        RETURN QUERY
        SELECT b.id, b.priority, b.scheduled_at, b.payload_bytes, 1::bigint
        FROM {schema}.background_jobs AS b
        WHERE b.status = 'pending' AND b.job_type = p_job_type AND b.priority = v_level
          AND b.scheduled_at <= now() AND b.queue = ANY(p_queues)
          AND b.queue NOT IN (SELECT p.queue FROM {schema}.jobrunner_queue_pauses AS p)
        ORDER BY b.scheduled_at, b.id
        LIMIT v_wanted
        FOR UPDATE OF b SKIP LOCKED;
        GET DIAGNOSTICS v_found = ROW_COUNT;
        v_wanted := v_wanted - v_found;
        EXIT WHEN v_wanted <= 0;
        SELECT b.priority INTO v_level FROM {schema}.background_jobs AS b
        WHERE b.status = 'pending' AND b.job_type = p_job_type AND b.priority < v_level
        ORDER BY b.priority DESC LIMIT 1;
    END LOOP;
END
$$;

SELECT {schema}.jobrunner_worker_only('{schema}.claim_walk_type(text, text[], integer)');
