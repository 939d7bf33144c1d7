-- Global limits per job type, enforced in the database so that replicas racing each other
-- cannot exceed them: at most N running, at most R starts per period (token bucket), at most
-- K running per concurrency key (fairness: one heavy user cannot take every slot), and a pause
-- a handler sets when its upstream rate-limits it.

ALTER TABLE {schema}.background_jobs
    ADD COLUMN IF NOT EXISTS concurrency_key text;

ALTER TABLE {schema}.background_jobs
    DROP CONSTRAINT IF EXISTS background_jobs_concurrency_key_check,
    ADD CONSTRAINT background_jobs_concurrency_key_check
        CHECK (concurrency_key IS NULL OR length(concurrency_key) <= 500);

-- Limited claims and limit checks count live jobs of one type.
CREATE INDEX IF NOT EXISTS background_jobs_type_live_idx
    ON {schema}.background_jobs (job_type, status, concurrency_key)
    WHERE status IN ('pending', 'running');

-- One row per limited (or paused) job type: the lock every limited claim of that type takes,
-- and the shared state of its token bucket and pause.
CREATE TABLE IF NOT EXISTS {schema}.jobrunner_limit_state (
    job_type     text        PRIMARY KEY,
    tokens       float8      NOT NULL DEFAULT 0,
    refilled_at  timestamptz NOT NULL DEFAULT now(),
    paused_until timestamptz,
    pause_reason text
);
ALTER TABLE {schema}.jobrunner_limit_state ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS jobrunner_limit_state_worker_all ON {schema}.jobrunner_limit_state;
CREATE POLICY jobrunner_limit_state_worker_all ON {schema}.jobrunner_limit_state
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
REVOKE ALL ON {schema}.jobrunner_limit_state FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.jobrunner_limit_state TO jobrunner_worker;

-- Claim up to p_limit jobs of one limited type. The state row's lock serialises the limited
-- claims of this type across replicas, so counting running jobs and taking tokens cannot race.
-- NULL limits mean "no such limit".
CREATE OR REPLACE FUNCTION {schema}.claim_limited_jobs(
    p_queues      text[],
    p_worker      text,
    p_limit       integer,
    p_lease       float8,
    p_job_type    text,
    p_max_running integer,
    p_rate        integer,
    p_period      float8,
    p_key_max     integer
) RETURNS SETOF {schema}.background_jobs
LANGUAGE plpgsql AS $$
DECLARE
    state   {schema}.jobrunner_limit_state;
    allowed integer := p_limit;
    running integer;
    bucket  float8;
    chosen  bigint[];
BEGIN
    INSERT INTO {schema}.jobrunner_limit_state (job_type, tokens) VALUES (p_job_type, coalesce(p_rate, 0))
    ON CONFLICT (job_type) DO NOTHING;
    SELECT * INTO state FROM {schema}.jobrunner_limit_state WHERE job_type = p_job_type FOR UPDATE;
    IF state.paused_until IS NOT NULL AND state.paused_until > now() THEN
        RETURN;
    END IF;
    IF p_max_running IS NOT NULL THEN
        -- running rows include those of dead workers until the rescuer frees them (lease expiry)
        SELECT count(*) INTO running FROM {schema}.background_jobs
        WHERE job_type = p_job_type AND status = 'running';
        allowed := least(allowed, p_max_running - running);
    END IF;
    IF p_rate IS NOT NULL THEN
        bucket := least(p_rate::float8,
                        state.tokens + extract(epoch FROM now() - state.refilled_at) * p_rate / p_period);
        allowed := least(allowed, floor(bucket)::integer);
    END IF;
    IF allowed <= 0 THEN
        IF p_rate IS NOT NULL THEN
            UPDATE {schema}.jobrunner_limit_state SET tokens = bucket, refilled_at = now()
            WHERE job_type = p_job_type;
        END IF;
        RETURN;
    END IF;

    IF p_key_max IS NULL THEN
        SELECT array_agg(id) INTO chosen FROM (
            SELECT id FROM {schema}.background_jobs
            WHERE status = 'pending' AND job_type = p_job_type AND queue = ANY(p_queues)
              AND scheduled_at <= now()
            ORDER BY priority DESC, scheduled_at, id
            LIMIT allowed
            FOR UPDATE SKIP LOCKED
        ) AS picked;
    ELSE
        -- Round robin over keys: every key's first waiting job before any key's second, after
        -- counting what each key already runs; at most p_key_max running per key.
        SELECT array_agg(id) INTO chosen FROM (
            SELECT c.id
            FROM (
                SELECT id, concurrency_key, priority, scheduled_at,
                       row_number() OVER (PARTITION BY concurrency_key
                                          ORDER BY priority DESC, scheduled_at, id) AS rank_in_key
                FROM {schema}.background_jobs
                WHERE status = 'pending' AND job_type = p_job_type AND queue = ANY(p_queues)
                  AND scheduled_at <= now()
            ) AS c
            LEFT JOIN (
                SELECT concurrency_key, count(*) AS n FROM {schema}.background_jobs
                WHERE status = 'running' AND job_type = p_job_type AND concurrency_key IS NOT NULL
                GROUP BY concurrency_key
            ) AS r ON r.concurrency_key = c.concurrency_key
            WHERE c.concurrency_key IS NULL OR c.rank_in_key + coalesce(r.n, 0) <= p_key_max
            ORDER BY CASE WHEN c.concurrency_key IS NULL THEN 1 ELSE c.rank_in_key + coalesce(r.n, 0) END,
                     c.priority DESC, c.scheduled_at, c.id
            LIMIT allowed
        ) AS picked;
        -- lock them; under the state row's lock no other limited claim of this type competes
        SELECT array_agg(id) INTO chosen FROM (
            SELECT id FROM {schema}.background_jobs
            WHERE id = ANY(chosen) AND status = 'pending'
            FOR UPDATE SKIP LOCKED
        ) AS locked;
    END IF;

    IF chosen IS NULL THEN
        RETURN;
    END IF;
    IF p_rate IS NOT NULL THEN
        UPDATE {schema}.jobrunner_limit_state
        SET tokens = bucket - cardinality(chosen), refilled_at = now()
        WHERE job_type = p_job_type;
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
REVOKE ALL ON FUNCTION {schema}.claim_limited_jobs(text[], text, integer, float8, text, integer, integer, float8, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.claim_limited_jobs(text[], text, integer, float8, text, integer, integer, float8, integer)
    TO jobrunner_worker;

-- enqueue_job gains the concurrency key (the old signature is replaced, not overloaded, so
-- that calls with defaults stay unambiguous). SECURITY DEFINER: the enqueuer role may not read
-- the queue (RLS), yet enqueue_job must return the id it inserted or the live job holding the
-- dedupe key; it can only insert pending jobs with the arguments given, and its search_path is
-- pinned so a caller cannot substitute objects.
DROP FUNCTION IF EXISTS {schema}.enqueue_job(text, jsonb, text, integer, timestamptz, integer, text);
CREATE FUNCTION {schema}.enqueue_job(
    job_type        text,
    payload         jsonb       DEFAULT '{}'::jsonb,
    queue           text        DEFAULT 'default',
    priority        integer     DEFAULT 0,
    scheduled_at    timestamptz DEFAULT NULL,
    max_attempts    integer     DEFAULT 5,
    dedupe_key      text        DEFAULT NULL,
    concurrency_key text        DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    LOOP
        INSERT INTO {schema}.background_jobs AS j
            (job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key)
        VALUES (enqueue_job.job_type, coalesce(enqueue_job.payload, '{}'::jsonb),
                coalesce(enqueue_job.queue, 'default'), coalesce(enqueue_job.priority, 0),
                coalesce(enqueue_job.scheduled_at, now()), coalesce(enqueue_job.max_attempts, 5),
                enqueue_job.dedupe_key, enqueue_job.concurrency_key)
        ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running')
        DO NOTHING
        RETURNING j.id INTO new_id;
        IF new_id IS NOT NULL THEN
            RETURN new_id;
        END IF;
        SELECT j.id INTO new_id FROM {schema}.background_jobs AS j
        WHERE j.dedupe_key = enqueue_job.dedupe_key AND j.status IN ('pending', 'running');
        IF new_id IS NOT NULL THEN
            RETURN new_id;
        END IF;
        -- the live holder of the key finished between our INSERT and SELECT: try again
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION {schema}.enqueue_job(text, jsonb, text, integer, timestamptz, integer, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.enqueue_job(text, jsonb, text, integer, timestamptz, integer, text, text)
    TO jobrunner_worker, jobrunner_enqueuer;
GRANT INSERT (concurrency_key) ON {schema}.background_jobs TO jobrunner_enqueuer;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON {schema}.jobrunner_limit_state FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.enqueue_job(text, jsonb, text, integer, '
                           'timestamptz, integer, text, text) FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.claim_limited_jobs(text[], text, integer, float8, '
                           'text, integer, integer, float8, integer) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
