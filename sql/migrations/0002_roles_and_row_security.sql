-- Least privilege. Two NOLOGIN group roles; grant them to the login roles you deploy with:
--   jobrunner_worker   - what `jobrunner run` needs: read/update/delete jobs, no DDL
--   jobrunner_enqueuer - may only add jobs (INSERT or enqueue_job), read nothing else
-- Row Level Security is on, so Supabase's `anon` and `authenticated` (which Supabase grants
-- everything in `public` by default) see and change nothing, even through PostgREST.
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

ALTER TABLE {schema}.background_jobs ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS background_jobs_worker_all ON {schema}.background_jobs;
CREATE POLICY background_jobs_worker_all ON {schema}.background_jobs
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS background_jobs_enqueuer_insert ON {schema}.background_jobs;
CREATE POLICY background_jobs_enqueuer_insert ON {schema}.background_jobs
    FOR INSERT TO jobrunner_enqueuer WITH CHECK (status = 'pending' AND attempts = 0);
-- enqueue_job's dedupe path reads the live holder of a key, and only that
DROP POLICY IF EXISTS background_jobs_enqueuer_live_keys ON {schema}.background_jobs;
CREATE POLICY background_jobs_enqueuer_live_keys ON {schema}.background_jobs
    FOR SELECT TO jobrunner_enqueuer
    USING (dedupe_key IS NOT NULL AND status IN ('pending', 'running'));

REVOKE ALL ON {schema}.background_jobs FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO jobrunner_worker, jobrunner_enqueuer;
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.background_jobs TO jobrunner_worker;
GRANT INSERT (job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key)
    ON {schema}.background_jobs TO jobrunner_enqueuer;
GRANT SELECT (id, dedupe_key, status) ON {schema}.background_jobs TO jobrunner_enqueuer;

REVOKE ALL ON FUNCTION {schema}.enqueue_job(text, jsonb, text, integer, timestamptz, integer, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.enqueue_job(text, jsonb, text, integer, timestamptz, integer, text)
    TO jobrunner_worker, jobrunner_enqueuer;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON {schema}.background_jobs FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.enqueue_job(text, jsonb, text, integer, '
                           'timestamptz, integer, text) FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT jobrunner_worker TO service_role;
        GRANT jobrunner_enqueuer TO service_role;
    END IF;
END
$$;
