-- Detach and drop the month partitions of `parent` that end at or before `cutoff`. DETACH takes
-- a short ACCESS EXCLUSIVE lock on the parent; lock_timeout keeps it from queueing behind a long
-- reader (the job then fails and retries later). Returns the dropped partitions' names,
-- unqualified.
-- requires: require_app_partitioned_table, month_partitions

CREATE OR REPLACE FUNCTION public.drop_month_partitions_before(parent regclass, cutoff timestamptz)
RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s' AS $$
DECLARE
    p record;
    dropped text[] := ARRAY[]::text[];
BEGIN
    PERFORM public.require_app_partitioned_table(parent);
    FOR p IN SELECT m.partition, c.relname FROM public.month_partitions(parent) AS m
             JOIN pg_class AS c ON c.oid = m.partition WHERE m.range_end <= cutoff LOOP
        dropped := dropped || p.relname::text;
        EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, p.partition);
        EXECUTE format('DROP TABLE %s', p.partition);
    END LOOP;
    RETURN dropped;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.drop_month_partitions_before(regclass, timestamptz) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.drop_month_partitions_before(regclass, timestamptz) TO jobrunner_worker, service_role;
