-- Makes a function the daemon's alone: EXECUTE is taken from PUBLIC and from Supabase's API
-- roles (anon, authenticated), which Supabase's default privileges give every new function in
-- public, and granted to jobrunner_worker. The function files of the daemon's own statements end
-- with a call of it, rather than each repeating the revokes.

CREATE OR REPLACE FUNCTION {schema}.jobrunner_worker_only(p_function regprocedure) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    api_role text;
BEGIN
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', p_function);
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = api_role) THEN
            EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %I', p_function, api_role);
        END IF;
    END LOOP;
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO jobrunner_worker', p_function);
END
$$;

-- for migrations and function files only
SELECT {schema}.jobrunner_worker_only('{schema}.jobrunner_worker_only(regprocedure)');
REVOKE EXECUTE ON FUNCTION {schema}.jobrunner_worker_only(regprocedure) FROM jobrunner_worker;
