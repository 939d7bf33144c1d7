-- A claim's walk of one job type with a per-key limit (fairness: one heavy user cannot take
-- every slot): round robin over concurrency keys, every key's first waiting job before any
-- key's second, after counting what each key already runs, and at most p_key_max running per
-- key. Up to p_limit jobs of the queues p_queues but the paused ones, locked for the calling
-- claim; `turn` is the round each job was picked in, the first part of its claim order.
--
-- It reads every runnable job of the type (through background_jobs_type_claim_idx) to rank
-- them per key: the caller holds the type's limit-state row, so no other claim of this type
-- competes meanwhile, and keyed types are the app's few rate-limited ones. Jobs without a key
-- all take the first turn. Its plan settings are claim_jobs', which calls it.
-- requires: jobrunner_worker_only

CREATE OR REPLACE FUNCTION {schema}.claim_walk_keys(p_job_type text, p_queues text[], p_limit integer, p_key_max integer)
RETURNS TABLE (id bigint, priority integer, scheduled_at timestamptz, payload_bytes integer, turn bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    WITH ranked AS (
        SELECT c.id, c.priority, c.scheduled_at,
               CASE WHEN c.concurrency_key IS NULL THEN 1 ELSE c.rank_in_key + coalesce(r.n, 0) END AS turn
        FROM (
            SELECT b.id, b.priority, b.scheduled_at, b.concurrency_key,
                   row_number() OVER (PARTITION BY b.concurrency_key
                                      ORDER BY b.priority DESC, b.scheduled_at, b.id) AS rank_in_key
            FROM {schema}.background_jobs AS b
            WHERE b.status = 'pending' AND b.job_type = p_job_type AND b.queue = ANY(p_queues)
              AND b.scheduled_at <= now()
              AND b.queue NOT IN (SELECT p.queue FROM {schema}.jobrunner_queue_pauses AS p)
        ) AS c
        LEFT JOIN (
            SELECT b.concurrency_key, count(*) AS n FROM {schema}.background_jobs AS b
            WHERE b.status = 'running' AND b.job_type = p_job_type AND b.concurrency_key IS NOT NULL
            GROUP BY b.concurrency_key
        ) AS r ON r.concurrency_key = c.concurrency_key
        WHERE c.concurrency_key IS NULL OR c.rank_in_key + coalesce(r.n, 0) <= p_key_max
        ORDER BY 4, c.priority DESC, c.scheduled_at, c.id
        LIMIT p_limit
    )
    SELECT b.id, b.priority, b.scheduled_at, b.payload_bytes, ranked.turn
    FROM {schema}.background_jobs AS b
    JOIN ranked ON ranked.id = b.id
    WHERE b.status = 'pending'
    FOR UPDATE OF b SKIP LOCKED;
END
$$;

SELECT {schema}.jobrunner_worker_only('{schema}.claim_walk_keys(text, text[], integer, integer)');
