-- A partition is a table of its own: row security and the privileges set on the parent do not
-- apply when it is queried directly, and Supabase's default privileges grant `anon` and
-- `authenticated` everything on new tables in `public`. This locks one partition down.
-- SECURITY DEFINER (runs as the migrating owner), like every partition function, so the worker
-- role can keep partitions without DDL rights.
-- requires: require_app_partition

CREATE OR REPLACE FUNCTION public.protect_partition(partition regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r text;
BEGIN
    PERFORM public.require_app_partition(partition);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', partition);
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', partition);
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON %s FROM %I', partition, r);
        END IF;
    END LOOP;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.protect_partition(regclass) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.protect_partition(regclass) TO jobrunner_worker, service_role;
