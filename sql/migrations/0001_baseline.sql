-- The queue's schema: its tables, indexes, roles, row security and privileges. The functions
-- live one per file in sql/functions/ (their current text); `jobrunner migrate` creates them
-- where the `jobrunner:functions` line below says, and re-applies a file whenever it changes.
-- The schema placeholders are filled in with the configured schema (a validated identifier),
-- quoted or bare, when the migration runs.

-- == Roles =====================================================================================
-- Least privilege: two NOLOGIN group roles; grant them to the login roles you deploy with.
--   jobrunner_worker   - what `jobrunner run` needs: read/update/delete jobs, no DDL
--   jobrunner_enqueuer - may only add jobs (INSERT or enqueue_job), read nothing else
-- Roles belong to the whole server while the migration lock is per database: another database
-- of the same server may create them at the same moment, hence the exception handlers.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jobrunner_worker') THEN
        BEGIN
            CREATE ROLE jobrunner_worker NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jobrunner_enqueuer') THEN
        BEGIN
            CREATE ROLE jobrunner_enqueuer NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

-- == background_jobs: the queue ================================================================
CREATE TABLE {schema}.background_jobs (
    id                    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    -- set by cancel_job on a running job: its worker stops the handler, the job ends cancelled
    cancel_requested_at   timestamptz,
    -- what a handler last reported as its progress
    progress              jsonb,
    -- per-key fairness of limited job types: at most N running jobs per key
    concurrency_key       text,
    -- The size of what a daemon holds of a job: its payload's JSON text. A stored generated
    -- column, not a CHECK on the expression: PostgreSQL evaluates every CHECK on every UPDATE,
    -- and each claim and outcome write would print the whole payload again; this is computed
    -- only when payload itself changes, which no core statement does. The claims sum it without
    -- reading the payload; background_jobs_payload_size_check (at the end) bounds it.
    payload_bytes         integer     GENERATED ALWAYS AS (octet_length(payload::text)) STORED,
    CONSTRAINT background_jobs_status_check CHECK (
        status IN ('pending', 'running', 'completed', 'failed', 'dead', 'cancelled')),
    CONSTRAINT background_jobs_job_type_check CHECK (job_type <> '' AND length(job_type) <= 200),
    CONSTRAINT background_jobs_queue_check CHECK (queue <> '' AND length(queue) <= 200),
    CONSTRAINT background_jobs_attempts_check CHECK (attempts >= 0),
    CONSTRAINT background_jobs_max_attempts_check CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT background_jobs_payload_check CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT background_jobs_dedupe_key_check CHECK (dedupe_key IS NULL OR length(dedupe_key) <= 500),
    CONSTRAINT background_jobs_concurrency_key_check
        CHECK (concurrency_key IS NULL OR length(concurrency_key) <= 500)
);

-- Frequent updates: leave room on each page for HOT updates and vacuum often, so the hot
-- part of the table stays small however much history it holds.
ALTER TABLE {schema}.background_jobs SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claims walk exactly this index: only runnable rows are in it, so finished history never
-- slows a claim down (claim_jobs says how it is walked).
CREATE INDEX background_jobs_claim_idx
    ON {schema}.background_jobs (queue, priority DESC, scheduled_at, id)
    WHERE status = 'pending';

-- The lease rescuer scans only running rows; the limited claims count running jobs through it.
CREATE INDEX background_jobs_lease_idx
    ON {schema}.background_jobs (lease_expires_at)
    WHERE status = 'running';

-- The pruner deletes finished rows by age.
CREATE INDEX background_jobs_finished_idx
    ON {schema}.background_jobs (finished_at)
    WHERE finished_at IS NOT NULL;

-- One live job per dedupe key; finished jobs free the key.
CREATE UNIQUE INDEX background_jobs_dedupe_idx
    ON {schema}.background_jobs (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running');

-- What the limited claims pick from: pending rows of one type, by concurrency key. Pending only:
-- running rows would cost every claim one more index entry, and the small running set is
-- counted through background_jobs_lease_idx instead.
CREATE INDEX background_jobs_type_pending_idx
    ON {schema}.background_jobs (job_type, concurrency_key)
    WHERE status = 'pending';

-- == The daemons' shared state =================================================================
-- Short leases on named roles ("queue_sampler", ...) so that one replica at a time does a job
-- that would be wasteful or wrong to do on all of them. A holder renews before expires_at;
-- when it dies, another takes over once the lease has run out.
CREATE TABLE {schema}.jobrunner_leaders (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Cron schedules. One row per schedule; the row, not any replica's memory, decides which tick
-- fires: a replica fires a tick by moving last_tick forward with a conditional UPDATE and
-- inserting the job in the same transaction, so however many replicas race, one wins.
CREATE TABLE {schema}.jobrunner_schedules (
    name          text        PRIMARY KEY,
    -- cron, timezone, job_type, payload, priority, queue, max_attempts, missed: what every
    -- replica computes ticks from (written by a replica when it starts, see jobrunner.schedules)
    definition    jsonb       NOT NULL,
    -- bumped on every change of definition: a tick computed from an older one does not fire
    version       integer     NOT NULL DEFAULT 1,
    -- ticks at or before this never fire: a new schedule does not backfill
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text,
    -- the latest tick handled (fired, or skipped as missed); NULL until the first one
    last_tick     timestamptz,
    last_fired_at timestamptz,
    -- the job of last_tick; NULL when that tick was skipped
    last_job_id   bigint,
    CONSTRAINT jobrunner_schedules_name_check CHECK (name <> '' AND length(name) <= 200),
    CONSTRAINT jobrunner_schedules_definition_check CHECK (jsonb_typeof(definition) = 'object')
);

-- One row per limited (or paused) job type: the lock every limited claim of that type takes,
-- and the shared state of its token bucket and pause.
CREATE TABLE {schema}.jobrunner_limit_state (
    job_type     text        PRIMARY KEY,
    tokens       float8      NOT NULL DEFAULT 0,
    refilled_at  timestamptz NOT NULL DEFAULT now(),
    paused_until timestamptz,
    pause_reason text
);

-- One row per limited queue: the lock every limited claim of that queue takes (before the type
-- row's), and the state of its token bucket.
CREATE TABLE {schema}.jobrunner_queue_limit_state (
    queue       text        PRIMARY KEY,
    tokens      float8      NOT NULL DEFAULT 0,
    refilled_at timestamptz NOT NULL DEFAULT now()
);

-- == Row security ==============================================================================
-- On for every table, so that Supabase's `anon` and `authenticated` (which Supabase grants
-- everything in `public` by default) see and change nothing, even through PostgREST.
ALTER TABLE {schema}.background_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.jobrunner_leaders ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.jobrunner_schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.jobrunner_limit_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.jobrunner_queue_limit_state ENABLE ROW LEVEL SECURITY;

-- The worker sees and changes every row.
CREATE POLICY background_jobs_worker_all ON {schema}.background_jobs
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
CREATE POLICY jobrunner_leaders_worker_all ON {schema}.jobrunner_leaders
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
CREATE POLICY jobrunner_schedules_worker_all ON {schema}.jobrunner_schedules
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
CREATE POLICY jobrunner_limit_state_worker_all ON {schema}.jobrunner_limit_state
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
CREATE POLICY jobrunner_queue_limit_state_worker_all ON {schema}.jobrunner_queue_limit_state
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);

-- The enqueuer adds pending jobs that have not run: it cannot forge a running or finished job.
CREATE POLICY background_jobs_enqueuer_insert ON {schema}.background_jobs
    FOR INSERT TO jobrunner_enqueuer WITH CHECK (status = 'pending' AND attempts = 0);
-- enqueue_job's dedupe path reads the live holder of a key, and only that
CREATE POLICY background_jobs_enqueuer_live_keys ON {schema}.background_jobs
    FOR SELECT TO jobrunner_enqueuer
    USING (dedupe_key IS NOT NULL AND status IN ('pending', 'running'));

-- == Privileges ================================================================================
GRANT USAGE ON SCHEMA {schema} TO jobrunner_worker, jobrunner_enqueuer;

REVOKE ALL ON {schema}.background_jobs, {schema}.jobrunner_leaders, {schema}.jobrunner_schedules,
    {schema}.jobrunner_limit_state, {schema}.jobrunner_queue_limit_state FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.background_jobs, {schema}.jobrunner_leaders,
    {schema}.jobrunner_schedules, {schema}.jobrunner_limit_state, {schema}.jobrunner_queue_limit_state
    TO jobrunner_worker;
-- the daemon's readiness check reads which migrations are applied
GRANT SELECT ON {schema}.jobrunner_migrations TO jobrunner_worker;

-- The enqueuer: the columns a new job is described by, and the id/status of the live job
-- holding a dedupe key (the rows the policy above lets it see).
GRANT INSERT (job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key)
    ON {schema}.background_jobs TO jobrunner_enqueuer;
GRANT SELECT (id, dedupe_key, status) ON {schema}.background_jobs TO jobrunner_enqueuer;

-- On Supabase: nothing for the API roles (their default privileges gave them every new table),
-- and the admin key's role may act as worker and as enqueuer.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON {schema}.background_jobs, {schema}.jobrunner_leaders, '
                           '{schema}.jobrunner_schedules, {schema}.jobrunner_limit_state, '
                           '{schema}.jobrunner_queue_limit_state, {schema}.jobrunner_migrations FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT jobrunner_worker TO service_role;
        GRANT jobrunner_enqueuer TO service_role;
    END IF;
END
$$;

-- == What needs functions ======================================================================
-- The functions the statements below call are created at this line, from their files (with
-- the files those require); the other function files are applied after the migrations.
-- jobrunner:functions background_jobs_notify set_payload_limit jobrunner_revoke_sequence_privileges

-- Wake idle daemons when jobs are inserted (background_jobs_notify says how).
CREATE TRIGGER background_jobs_notify_insert
    AFTER INSERT ON {schema}.background_jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.background_jobs_notify();

-- Payload size, enforced where every path meets: the table, so that a plain INSERT, COPY or
-- either enqueue function cannot hand the daemons payloads that exhaust their memory. 1 MiB of
-- JSON to start with; the operator changes it with set_payload_limit.
SELECT {schema}.set_payload_limit(1048576);

-- No role but the owner needs any privilege on the sequences of the tables above.
SELECT {schema}.jobrunner_revoke_sequence_privileges();
