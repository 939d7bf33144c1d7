-- The month partitions partition upkeep should create, as of `at`, for every partitioned app
-- table: each month from the month of `at` (UTC) to `months_ahead` months after it that has no
-- partition yet, and each month between the table's earliest month partition and that horizon
-- whose rows wait in the default partition (written while the month had no partition; creating
-- the partition moves them). `default_rows` is how many rows of the month wait there. Rows of
-- other months stay in the default partition: older ones belong to months dropped or archived
-- already, later ones to a clock far ahead. Reads the default partitions, which only their owner
-- may: SECURITY DEFINER.
-- requires: app_partitioned_tables, month_partitions

CREATE OR REPLACE FUNCTION public.partitions_due(months_ahead integer, at timestamptz DEFAULT now())
RETURNS TABLE (parent regclass, month date, default_rows bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first_month date;
    last_month date;
    horizon timestamptz;
    table_oid regclass;
    default_partition regclass;
    earliest timestamptz;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'partitions_due: months_ahead must be 0 to 120 (got %)', months_ahead;
    END IF;
    IF at IS NULL THEN
        RAISE EXCEPTION 'partitions_due: at must not be NULL';
    END IF;
    first_month := date_trunc('month', at AT TIME ZONE 'UTC')::date;
    last_month := (first_month + make_interval(months => months_ahead))::date;
    horizon := (last_month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    FOREACH table_oid IN ARRAY public.app_partitioned_tables() LOOP
        SELECT min(m.range_start) INTO earliest FROM public.month_partitions(table_oid) AS m;
        SELECT c.oid::regclass INTO default_partition
        FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = table_oid AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';
        RETURN QUERY EXECUTE format(
            'WITH waiting AS ('
            '    SELECT date_trunc(''month'', d.created_at AT TIME ZONE ''UTC'')::date AS month, count(*) AS n'
            '    FROM %s AS d WHERE d.created_at >= $4 AND d.created_at < $5 GROUP BY 1'
            '), wanted AS ('
            '    SELECT g::date AS month FROM generate_series($2::timestamp, $3::timestamp, interval ''1 month'') AS g'
            '    UNION SELECT w.month FROM waiting AS w'
            ')'
            'SELECT $1, t.month, coalesce(w.n, 0)::bigint FROM wanted AS t LEFT JOIN waiting AS w USING (month)'
            ' WHERE NOT EXISTS (SELECT 1 FROM public.month_partitions($1) AS m'
            '                   WHERE m.range_start = t.month::timestamp AT TIME ZONE ''UTC'')'
            ' ORDER BY t.month',
            -- no default partition: an empty stand-in with the one column read
            coalesce(default_partition::text, '(SELECT NULL::timestamptz AS created_at WHERE false)'))
        USING table_oid, first_month, last_month,
              coalesce(earliest, first_month::timestamp AT TIME ZONE 'UTC'), horizon;
    END LOOP;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.partitions_due(integer, timestamptz) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.partitions_due(integer, timestamptz) TO jobrunner_worker, service_role;
