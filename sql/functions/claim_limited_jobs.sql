-- A claim of one limited job type, which no daemon calls: it goes through
-- claim_jobs_within_limits (same arguments, the default byte budget), so it is bounded like every
-- other claim.
-- requires: claim_jobs_within_limits

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
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM {schema}.claim_jobs_within_limits(p_queues, p_worker, p_limit, p_lease, p_job_type, '{}'::text[],
                                                    p_max_running, p_rate, p_period, p_key_max, NULL, NULL, NULL,
                                                    NULL)
$$;

REVOKE ALL ON FUNCTION {schema}.claim_limited_jobs(text[], text, integer, float8, text, integer, integer, float8, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.claim_limited_jobs(text[], text, integer, float8, text, integer, integer, float8, integer) TO jobrunner_worker;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.claim_limited_jobs(text[], text, integer, float8, text, integer, integer, float8, integer) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
