-- Bulk enqueue as a function, SECURITY DEFINER like enqueue_job: the enqueuer role may not read
-- the queue (RLS), so it could not INSERT … RETURNING the ids of rows without a dedupe key.
-- Parallel arrays, one row per index; rows whose dedupe key a live job already holds are
-- skipped. Returns the ids inserted.
CREATE OR REPLACE FUNCTION {schema}.enqueue_jobs(
    job_types        text[],
    payloads         jsonb[],
    queues           text[],
    priorities       integer[],
    scheduled_ats    timestamptz[],
    max_attempts     integer[],
    dedupe_keys      text[],
    concurrency_keys text[]
) RETURNS SETOF bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO {schema}.background_jobs AS j
        (job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key)
    SELECT t.job_type, coalesce(t.payload, '{}'::jsonb), coalesce(t.queue, 'default'), coalesce(t.priority, 0),
           coalesce(t.scheduled_at, now()), coalesce(t.max_attempts, 5), t.dedupe_key, t.concurrency_key
    FROM unnest(job_types, payloads, queues, priorities, scheduled_ats, max_attempts, dedupe_keys, concurrency_keys)
         AS t(job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key)
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running')
    DO NOTHING
    RETURNING j.id
$$;

REVOKE ALL ON FUNCTION {schema}.enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], text[], text[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], text[], text[])
    TO jobrunner_worker, jobrunner_enqueuer;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.enqueue_jobs(text[], jsonb[], text[], integer[], '
                           'timestamptz[], integer[], text[], text[]) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
