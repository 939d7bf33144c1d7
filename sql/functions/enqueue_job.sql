-- Enqueue one job through SQL or Supabase RPC; returns its id. With a dedupe key that a live
-- (pending or running) job already holds, nothing is inserted and that job's id is returned.
-- payload left out is {}; a NULL payload is refused. NULL queue, priority, scheduled_at and
-- max_attempts take their defaults.
-- SECURITY DEFINER: the enqueuer role may not read the queue (row security), yet this must return
-- the id it inserted or the live job holding the key. It can only insert pending jobs with the
-- arguments given, and its search_path is pinned so that a caller cannot substitute objects.

CREATE OR REPLACE FUNCTION {schema}.enqueue_job(
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
    -- NULL is most likely a missing value in the caller's code, not a wish for {}: leaving the
    -- argument out is how to ask for the empty object
    IF enqueue_job.payload IS NULL THEN
        RAISE EXCEPTION 'enqueue_job: payload must be a JSON object, not NULL (leave it out for {})'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF enqueue_job.dedupe_key IS NULL THEN
        -- nothing to arbitrate: a plain INSERT. ON CONFLICT would make it a speculative
        -- insertion, a second WAL record confirming the row.
        INSERT INTO {schema}.background_jobs AS j
            (job_type, payload, queue, priority, scheduled_at, max_attempts, concurrency_key)
        VALUES (enqueue_job.job_type, enqueue_job.payload,
                coalesce(enqueue_job.queue, 'default'), coalesce(enqueue_job.priority, 0),
                coalesce(enqueue_job.scheduled_at, now()), coalesce(enqueue_job.max_attempts, 5),
                enqueue_job.concurrency_key)
        RETURNING j.id INTO new_id;
        RETURN new_id;
    END IF;
    LOOP
        INSERT INTO {schema}.background_jobs AS j
            (job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key)
        VALUES (enqueue_job.job_type, enqueue_job.payload,
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
GRANT EXECUTE ON FUNCTION {schema}.enqueue_job(text, jsonb, text, integer, timestamptz, integer, text, text) TO jobrunner_worker, jobrunner_enqueuer;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.enqueue_job(text, jsonb, text, integer, timestamptz, integer, text, text) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
