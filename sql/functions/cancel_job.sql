-- Cancel a job by id, from SQL or Supabase RPC. A pending or blocked job (one waiting for its
-- parents, 0004_flows.sql) is cancelled at once; a running one
-- is flagged and its worker told (NOTIFY, with polling as the fallback), and it ends `cancelled`
-- once its handler has stopped. Returns the job's status after the call: 'cancelled',
-- 'cancelling', another status when it had already finished, NULL when there is no such job.

CREATE OR REPLACE FUNCTION {schema}.cancel_job(job_id bigint) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    current_status text;
BEGIN
    UPDATE {schema}.background_jobs AS j
    SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
    WHERE j.id = cancel_job.job_id AND j.status IN ('pending', 'blocked')
    RETURNING j.status INTO current_status;
    IF current_status IS NOT NULL THEN
        RETURN current_status;
    END IF;
    UPDATE {schema}.background_jobs AS j
    SET cancel_requested_at = coalesce(j.cancel_requested_at, now())
    WHERE j.id = cancel_job.job_id AND j.status = 'running'
    RETURNING j.status INTO current_status;
    IF current_status IS NOT NULL THEN
        PERFORM pg_notify('jobrunner_cancel_{schema_name}', cancel_job.job_id::text);
        RETURN 'cancelling';
    END IF;
    SELECT j.status INTO current_status FROM {schema}.background_jobs AS j WHERE j.id = cancel_job.job_id;
    RETURN current_status;
END
$$;

REVOKE ALL ON FUNCTION {schema}.cancel_job(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.cancel_job(bigint) TO jobrunner_worker;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.cancel_job(bigint) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
