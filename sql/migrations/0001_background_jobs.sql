-- The queue table and everything the app needs to enqueue with plain SQL.
-- `{schema}` is replaced by the configured schema (a validated identifier) when migrations run.

CREATE TABLE IF NOT EXISTS {schema}.background_jobs (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_type              text        NOT NULL,
    queue                 text        NOT NULL DEFAULT 'default',
    payload               jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- higher runs first
    priority              integer     NOT NULL DEFAULT 0,
    status                text        NOT NULL DEFAULT 'pending',
    attempts              integer     NOT NULL DEFAULT 0,
    max_attempts          integer     NOT NULL DEFAULT 5,
    scheduled_at          timestamptz NOT NULL DEFAULT now(),
    dedupe_key            text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    lease_expires_at      timestamptz,
    worker_id             text,
    last_error            text,
    last_error_traceback  text,
    result                jsonb,
    -- how often a shutting-down worker handed the job back without spending an attempt
    release_count         integer     NOT NULL DEFAULT 0,
    CONSTRAINT background_jobs_status_check CHECK (
        status IN ('pending', 'running', 'completed', 'failed', 'dead', 'cancelled')),
    CONSTRAINT background_jobs_job_type_check CHECK (job_type <> '' AND length(job_type) <= 200),
    CONSTRAINT background_jobs_queue_check CHECK (queue <> '' AND length(queue) <= 200),
    CONSTRAINT background_jobs_attempts_check CHECK (attempts >= 0),
    CONSTRAINT background_jobs_max_attempts_check CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT background_jobs_payload_check CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT background_jobs_dedupe_key_check CHECK (dedupe_key IS NULL OR length(dedupe_key) <= 500)
);

-- Frequent updates: leave room on each page for HOT updates and vacuum often, so the hot
-- part of the table stays small however much history it holds.
ALTER TABLE {schema}.background_jobs SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claim query walks exactly this index: only runnable rows are in it, so finished
-- history never slows a claim down.
CREATE INDEX IF NOT EXISTS background_jobs_claim_idx
    ON {schema}.background_jobs (queue, priority DESC, scheduled_at, id)
    WHERE status = 'pending';

-- The lease rescuer scans only running rows.
CREATE INDEX IF NOT EXISTS background_jobs_lease_idx
    ON {schema}.background_jobs (lease_expires_at)
    WHERE status = 'running';

-- The pruner deletes finished rows by age.
CREATE INDEX IF NOT EXISTS background_jobs_finished_idx
    ON {schema}.background_jobs (finished_at)
    WHERE finished_at IS NOT NULL;

-- One live job per dedupe key; finished jobs free the key.
CREATE UNIQUE INDEX IF NOT EXISTS background_jobs_dedupe_idx
    ON {schema}.background_jobs (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running');

-- Wake idle daemons: one notification per queue per statement (and Postgres folds duplicates
-- within a transaction), only for rows runnable now; delayed rows are found by polling.
CREATE OR REPLACE FUNCTION {schema}.background_jobs_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobrunner_' || TG_TABLE_SCHEMA, q.queue)
    FROM (SELECT DISTINCT queue FROM new_rows WHERE status = 'pending' AND scheduled_at <= now()) AS q;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS background_jobs_notify_insert ON {schema}.background_jobs;
CREATE TRIGGER background_jobs_notify_insert
    AFTER INSERT ON {schema}.background_jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.background_jobs_notify();

-- Enqueue through SQL / Supabase RPC. With a dedupe key that a live job already holds this is a
-- no-op returning that job's id.
CREATE OR REPLACE FUNCTION {schema}.enqueue_job(
    job_type     text,
    payload      jsonb       DEFAULT '{}'::jsonb,
    queue        text        DEFAULT 'default',
    priority     integer     DEFAULT 0,
    scheduled_at timestamptz DEFAULT NULL,
    max_attempts integer     DEFAULT 5,
    dedupe_key   text        DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    LOOP
        INSERT INTO {schema}.background_jobs AS j
            (job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key)
        VALUES (enqueue_job.job_type, coalesce(enqueue_job.payload, '{}'::jsonb),
                coalesce(enqueue_job.queue, 'default'), coalesce(enqueue_job.priority, 0),
                coalesce(enqueue_job.scheduled_at, now()), coalesce(enqueue_job.max_attempts, 5),
                enqueue_job.dedupe_key)
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
