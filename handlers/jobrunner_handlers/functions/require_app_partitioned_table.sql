-- `parent` itself, when it is one of the app's partitioned tables; an error otherwise. The
-- SECURITY DEFINER partition functions check their regclass argument with it, so the worker role
-- cannot aim them at auth.users, the catalog or the queue.
-- requires: app_partitioned_tables

CREATE OR REPLACE FUNCTION public.require_app_partitioned_table(parent regclass) RETURNS regclass
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF parent IS NULL OR NOT parent = ANY (public.app_partitioned_tables()) THEN
        RAISE EXCEPTION '% is not one of the app''s partitioned tables', parent
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN parent;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.require_app_partitioned_table(regclass) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.require_app_partitioned_table(regclass) TO jobrunner_worker, service_role;
