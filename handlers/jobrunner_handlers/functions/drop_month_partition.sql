-- One partition (archived first by the caller): detach and drop it.
-- requires: require_app_partitioned_table, month_partitions

CREATE OR REPLACE FUNCTION public.drop_month_partition(parent regclass, partition regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s' AS $$
BEGIN
    PERFORM public.require_app_partitioned_table(parent);
    IF NOT EXISTS (SELECT 1 FROM public.month_partitions(parent) AS m WHERE m.partition = drop_month_partition.partition) THEN
        RAISE EXCEPTION '% is not a month partition of %', partition, parent USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, partition);
    EXECUTE format('DROP TABLE %s', partition);
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.drop_month_partition(regclass, regclass) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.drop_month_partition(regclass, regclass) TO jobrunner_worker, service_role;
