-- The parent of `partition`, when it is a partition (a plain table, the default partition
-- included) of one of the app's partitioned tables; an error otherwise.
-- requires: app_partitioned_tables

CREATE OR REPLACE FUNCTION public.require_app_partition(partition regclass) RETURNS regclass
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent regclass;
BEGIN
    SELECT i.inhparent::regclass INTO parent
    FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhrelid = partition AND c.relkind = 'r' AND c.relispartition
      AND i.inhparent = ANY (public.app_partitioned_tables()::oid[]);
    IF parent IS NULL THEN
        RAISE EXCEPTION '% is not a partition of one of the app''s partitioned tables', partition
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN parent;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.require_app_partition(regclass) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.require_app_partition(regclass) TO jobrunner_worker, service_role;
