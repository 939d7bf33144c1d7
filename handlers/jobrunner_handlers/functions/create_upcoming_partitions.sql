-- Partitions for `months` months from the month of `from_month` (default: this month, UTC) for
-- every partitioned app table, all in the caller's transaction (the migration's; the daily
-- maintain_partitions job creates one partition per transaction instead). Returns the partitions
-- created.
-- requires: app_partitioned_tables, create_month_partition

CREATE OR REPLACE FUNCTION public.create_upcoming_partitions(months integer DEFAULT 3, from_month date DEFAULT NULL)
RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    start_month date := date_trunc('month', coalesce(from_month, (now() AT TIME ZONE 'UTC')::date))::date;
    parent regclass;
    created text[] := ARRAY[]::text[];
    created_name text;
BEGIN
    FOREACH parent IN ARRAY public.app_partitioned_tables() LOOP
        FOR step IN 0 .. greatest(months, 1) - 1 LOOP
            SELECT c.partition_name INTO created_name
            FROM public.create_month_partition(parent, (start_month + make_interval(months => step))::date) AS c;
            IF created_name IS NOT NULL THEN
                created := created || created_name;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.create_upcoming_partitions(integer, date) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.create_upcoming_partitions(integer, date) TO jobrunner_worker, service_role;
