-- Bulk enqueue (AsyncClient.enqueue_many), SECURITY DEFINER like enqueue_job: the enqueuer role
-- may not read the queue, so it could not INSERT ... RETURNING the ids of rows without a dedupe
-- key. Parallel arrays, one element per job; rows whose dedupe key a live job already holds are
-- skipped. Returns the ids inserted, in the order of the arrays. The arrays' lengths are
-- checked: unnest pads shorter arrays with NULLs, which would silently turn a caller's
-- mismatched arrays into default-valued jobs. An optional column's array (all but job_types and
-- payloads) may be NULL instead: every job then takes that column's default, as a NULL element
-- does; the clients send NULL for a column no job of the batch sets.

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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer := coalesce(pg_catalog.cardinality(job_types), 0);
BEGIN
    IF pg_catalog.array_ndims(job_types) > 1 OR coalesce(pg_catalog.cardinality(payloads), 0) <> n
       OR pg_catalog.cardinality(queues) <> n OR pg_catalog.cardinality(priorities) <> n
       OR pg_catalog.cardinality(scheduled_ats) <> n OR pg_catalog.cardinality(max_attempts) <> n
       OR pg_catalog.cardinality(dedupe_keys) <> n OR pg_catalog.cardinality(concurrency_keys) <> n THEN
        RAISE EXCEPTION 'enqueue_jobs: every array must have one element per job (% job types), or be NULL', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- as enqueue_job: a NULL payload is refused, not taken for {}
    IF pg_catalog.array_position(payloads, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'enqueue_jobs: payload must be a JSON object, not NULL (job %)',
            pg_catalog.array_position(payloads, NULL) USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF dedupe_keys IS NULL THEN
        -- no job has a dedupe key: nothing to arbitrate. The same INSERT without ON CONFLICT, which
        -- makes every row a speculative insertion (a second WAL record per row, confirming it).
        RETURN QUERY
        INSERT INTO {schema}.background_jobs AS j
            (job_type, payload, queue, priority, scheduled_at, max_attempts, concurrency_key)
        SELECT t.job_type, t.payload, coalesce(t.queue, 'default'), coalesce(t.priority, 0),
               coalesce(t.scheduled_at, pg_catalog.now()), coalesce(t.max_attempts, 5), t.concurrency_key
        FROM unnest(job_types, payloads, queues, priorities, scheduled_ats, max_attempts, concurrency_keys)
             AS t(job_type, payload, queue, priority, scheduled_at, max_attempts, concurrency_key)
        RETURNING j.id;
        RETURN;
    END IF;
    RETURN QUERY
    INSERT INTO {schema}.background_jobs AS j
        (job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key)
    SELECT t.job_type, t.payload, coalesce(t.queue, 'default'), coalesce(t.priority, 0),
           coalesce(t.scheduled_at, pg_catalog.now()), coalesce(t.max_attempts, 5), t.dedupe_key, t.concurrency_key
    -- unnest of many arrays is syntax (ROWS FROM), not a function that can be qualified
    FROM unnest(job_types, payloads, queues, priorities, scheduled_ats, max_attempts, dedupe_keys, concurrency_keys)
         AS t(job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key)
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running')
    DO NOTHING
    RETURNING j.id;
END
$$;

REVOKE ALL ON FUNCTION {schema}.enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], text[], text[]) TO jobrunner_worker, jobrunner_enqueuer;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], text[], text[]) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
