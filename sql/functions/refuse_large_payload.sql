-- Called by the payload size CHECK (background_jobs_payload_size_check, see set_payload_limit)
-- only when a row is over the limit (the OR evaluates it last), to say so with the numbers: the
-- plain constraint error would name the constraint and not the limit. Every role that may insert
-- jobs evaluates the CHECK, and so needs EXECUTE on it.

CREATE OR REPLACE FUNCTION {schema}.refuse_large_payload(payload_bytes integer, max_bytes integer) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'payload is % bytes of JSON; the limit is % bytes', payload_bytes, max_bytes
        USING ERRCODE = 'check_violation', CONSTRAINT = 'background_jobs_payload_size_check',
              TABLE = 'background_jobs', SCHEMA = '{schema_name}',
              HINT = 'Store large data elsewhere (e.g. object storage) and pass a reference.';
END
$$;

REVOKE ALL ON FUNCTION {schema}.refuse_large_payload(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.refuse_large_payload(integer, integer) TO jobrunner_worker, jobrunner_enqueuer;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.refuse_large_payload(integer, integer) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
