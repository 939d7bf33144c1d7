-- The daemon's claim under limits: up to p_limit jobs under a job type's limits, a queue's
-- limits, or both, enforced in the database so that replicas racing each other cannot exceed
-- them: at most N running, at most R starts per period (token bucket), at most p_key_max running
-- per concurrency key (fairness: one heavy user cannot take every slot), and a pause a handler
-- sets when its upstream rate-limits it.
-- * p_job_type NULL: any type but p_skip_types (the types claimed apart for their own limits)
--   and but types paused for upstream back-pressure; else only that type.
-- * p_queue NULL: the queues p_queues, no queue limit; else that one queue under its limits.
-- NULL limits mean "no such limit". Locks are taken queue row first, then type row, by every
-- caller, so two claims cannot deadlock; the state rows' locks serialise the limited claims of a
-- type or queue across replicas, so counting running jobs and taking tokens cannot race.
-- Running jobs are counted without an index of their own: the running set is small
-- (background_jobs_lease_idx holds exactly it), and every claim would pay to maintain one.
-- The byte budget p_max_bytes (as in claim_jobs) applies to what either branch picks, before
-- the tokens are taken: a job left out by the budget costs no token.

CREATE OR REPLACE FUNCTION {schema}.claim_jobs_within_limits(
    p_queues            text[],
    p_worker            text,
    p_limit             integer,
    p_lease             float8,
    p_job_type          text,
    p_skip_types        text[],
    p_max_running       integer,
    p_rate              integer,
    p_period            float8,
    p_key_max           integer,
    p_queue             text,
    p_queue_max_running integer,
    p_queue_rate        integer,
    p_queue_period      float8,
    p_max_bytes         bigint DEFAULT 16777216
) RETURNS SETOF {schema}.background_jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qstate  {schema}.jobrunner_queue_limit_state;
    tstate  {schema}.jobrunner_limit_state;
    allowed integer := p_limit;
    running integer;
    qbucket float8;
    tbucket float8;
    queues  text[] := CASE WHEN p_queue IS NULL THEN p_queues ELSE ARRAY[p_queue] END;
    chosen  bigint[];
BEGIN
    IF p_queue IS NOT NULL THEN
        INSERT INTO {schema}.jobrunner_queue_limit_state (queue, tokens) VALUES (p_queue, coalesce(p_queue_rate, 0))
        ON CONFLICT (queue) DO NOTHING;
        SELECT * INTO qstate FROM {schema}.jobrunner_queue_limit_state WHERE queue = p_queue FOR UPDATE;
        IF p_queue_max_running IS NOT NULL THEN
            -- running rows include those of dead workers until the rescuer frees them
            SELECT count(*) INTO running FROM {schema}.background_jobs
            WHERE queue = p_queue AND status = 'running';
            allowed := least(allowed, p_queue_max_running - running);
        END IF;
        IF p_queue_rate IS NOT NULL THEN
            qbucket := least(p_queue_rate::float8,
                             qstate.tokens + extract(epoch FROM now() - qstate.refilled_at) * p_queue_rate / p_queue_period);
            allowed := least(allowed, floor(qbucket)::integer);
        END IF;
    END IF;

    IF p_job_type IS NOT NULL THEN
        INSERT INTO {schema}.jobrunner_limit_state (job_type, tokens) VALUES (p_job_type, coalesce(p_rate, 0))
        ON CONFLICT (job_type) DO NOTHING;
        SELECT * INTO tstate FROM {schema}.jobrunner_limit_state WHERE job_type = p_job_type FOR UPDATE;
        IF tstate.paused_until IS NOT NULL AND tstate.paused_until > now() THEN
            allowed := 0;
        END IF;
        IF p_max_running IS NOT NULL THEN
            SELECT count(*) INTO running FROM {schema}.background_jobs
            WHERE job_type = p_job_type AND status = 'running';
            allowed := least(allowed, p_max_running - running);
        END IF;
        IF p_rate IS NOT NULL THEN
            tbucket := least(p_rate::float8,
                             tstate.tokens + extract(epoch FROM now() - tstate.refilled_at) * p_rate / p_period);
            allowed := least(allowed, floor(tbucket)::integer);
        END IF;
    END IF;

    IF allowed > 0 AND p_key_max IS NULL THEN
        -- one walk of background_jobs_claim_idx per queue, in claim order (see 0008)
        SELECT array_agg(w.id) INTO chosen FROM (
            SELECT c.id,
                   row_number() OVER claim_order AS n,
                   sum(c.payload_bytes) OVER claim_order AS bytes_so_far
            FROM unnest(queues) AS q(name)
            CROSS JOIN LATERAL (
                SELECT b.id, b.priority, b.scheduled_at, b.payload_bytes FROM {schema}.background_jobs AS b
                WHERE b.status = 'pending' AND b.queue = q.name AND b.scheduled_at <= now()
                  AND (p_job_type IS NULL OR b.job_type = p_job_type)
                  AND (p_job_type IS NOT NULL OR (
                      b.job_type <> ALL(p_skip_types)
                      AND b.job_type NOT IN (SELECT ls.job_type FROM {schema}.jobrunner_limit_state AS ls
                                             WHERE ls.paused_until > now())))
                ORDER BY b.priority DESC, b.scheduled_at, b.id
                LIMIT allowed
                FOR UPDATE OF b SKIP LOCKED
            ) AS c
            WINDOW claim_order AS (ORDER BY c.priority DESC, c.scheduled_at, c.id ROWS UNBOUNDED PRECEDING)
            ORDER BY c.priority DESC, c.scheduled_at, c.id
            LIMIT allowed
        ) AS w
        WHERE w.n = 1 OR w.bytes_so_far <= p_max_bytes;
    ELSIF allowed > 0 THEN
        -- Round robin over keys: every key's first waiting job before any key's second, after
        -- counting what each key already runs; at most p_key_max running per key.
        SELECT array_agg(w.id) INTO chosen FROM (
            SELECT p.id,
                   row_number() OVER claim_order AS n,
                   sum(p.payload_bytes) OVER claim_order AS bytes_so_far
            FROM (
                SELECT c.id, c.payload_bytes, c.priority, c.scheduled_at,
                       CASE WHEN c.concurrency_key IS NULL THEN 1 ELSE c.rank_in_key + coalesce(r.n, 0) END AS turn
                FROM (
                    SELECT id, concurrency_key, priority, scheduled_at, payload_bytes,
                           row_number() OVER (PARTITION BY concurrency_key
                                              ORDER BY priority DESC, scheduled_at, id) AS rank_in_key
                    FROM {schema}.background_jobs
                    WHERE status = 'pending' AND job_type = p_job_type AND queue = ANY(queues)
                      AND scheduled_at <= now()
                ) AS c
                LEFT JOIN (
                    SELECT concurrency_key, count(*) AS n FROM {schema}.background_jobs
                    WHERE status = 'running' AND job_type = p_job_type AND concurrency_key IS NOT NULL
                    GROUP BY concurrency_key
                ) AS r ON r.concurrency_key = c.concurrency_key
                WHERE c.concurrency_key IS NULL OR c.rank_in_key + coalesce(r.n, 0) <= p_key_max
            ) AS p
            WINDOW claim_order AS (ORDER BY p.turn, p.priority DESC, p.scheduled_at, p.id ROWS UNBOUNDED PRECEDING)
            ORDER BY p.turn, p.priority DESC, p.scheduled_at, p.id
            LIMIT allowed
        ) AS w
        WHERE w.n = 1 OR w.bytes_so_far <= p_max_bytes;
        -- lock them; under the type row's lock no other limited claim of this type competes
        SELECT array_agg(id) INTO chosen FROM (
            SELECT id FROM {schema}.background_jobs
            WHERE id = ANY(chosen) AND status = 'pending'
            FOR UPDATE SKIP LOCKED
        ) AS locked;
    END IF;

    -- buckets refill whether or not anything was taken; what was taken comes off both
    IF qbucket IS NOT NULL THEN
        UPDATE {schema}.jobrunner_queue_limit_state
        SET tokens = qbucket - coalesce(cardinality(chosen), 0), refilled_at = now()
        WHERE queue = p_queue;
    END IF;
    IF tbucket IS NOT NULL THEN
        UPDATE {schema}.jobrunner_limit_state
        SET tokens = tbucket - coalesce(cardinality(chosen), 0), refilled_at = now()
        WHERE job_type = p_job_type;
    END IF;
    IF chosen IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE {schema}.background_jobs AS j
    SET status = 'running',
        attempts = j.attempts + 1,
        started_at = now(),
        lease_expires_at = now() + make_interval(secs => p_lease),
        worker_id = p_worker
    WHERE j.id = ANY(chosen)
    RETURNING j.*;
END
$$;

REVOKE ALL ON FUNCTION {schema}.claim_jobs_within_limits(text[], text, integer, float8, text, text[], integer, integer, float8, integer, text, integer, integer, float8, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.claim_jobs_within_limits(text[], text, integer, float8, text, text[], integer, integer, float8, integer, text, integer, integer, float8, bigint) TO jobrunner_worker;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.claim_jobs_within_limits(text[], text, integer, float8, text, text[], integer, integer, float8, integer, text, integer, integer, float8, bigint) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
