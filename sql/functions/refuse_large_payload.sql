-- Called by the payload size CHECK (background_jobs_payload_size_check, see set_payload_limit)
-- only when a row is over the limit (the OR evaluates it last), to say so with the numbers: the
-- plain constraint error would name the constraint and not the limit.
--
-- Everyone may execute it. PostgreSQL checks EXECUTE on every function of a CHECK expression
-- when a statement that evaluates it starts, not only when the call is reached, so without it
-- every INSERT or UPDATE by a role outside jobrunner_enqueuer/jobrunner_worker (an operator's
-- role, a platform's service role that bypasses row security) would fail, small payloads
-- included. It reads nothing and only raises the limit's error.

CREATE OR REPLACE FUNCTION {schema}.refuse_large_payload(payload_bytes integer, max_bytes integer) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'payload is % bytes of JSON; the limit is % bytes', payload_bytes, max_bytes
        USING ERRCODE = 'check_violation', CONSTRAINT = 'background_jobs_payload_size_check',
              TABLE = 'background_jobs', SCHEMA = '{schema_name}',
              HINT = 'Store large data elsewhere (e.g. object storage) and pass a reference.';
END
$$;

GRANT EXECUTE ON FUNCTION {schema}.refuse_large_payload(integer, integer) TO PUBLIC;
