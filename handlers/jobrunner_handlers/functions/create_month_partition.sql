-- Create the partition of `parent` holding the month of `month` (UTC), unless it exists. Rows
-- that already landed in the default partition for that month move into the new partition
-- (ATTACH would refuse them otherwise). Returns the new partition's name, NULL when it existed.
-- requires: require_app_partitioned_table, protect_partition

CREATE OR REPLACE FUNCTION public.create_month_partition(parent regclass, month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '10s' AS $$
DECLARE
    first_day date := date_trunc('month', month)::date;
    lower_bound timestamptz := first_day::timestamp AT TIME ZONE 'UTC';
    upper_bound timestamptz := (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    parent_schema text;
    parent_name text;
    partition_name text;
    default_partition regclass;
BEGIN
    PERFORM public.require_app_partitioned_table(parent);
    SELECT n.nspname, c.relname INTO parent_schema, parent_name
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = parent AND c.relkind = 'p';
    IF parent_name IS NULL THEN
        RAISE EXCEPTION '% is not a partitioned table', parent;
    END IF;
    partition_name := parent_name || '_p' || to_char(first_day, 'YYYY_MM');
    -- two maintainers creating the same month: the second waits, then finds it
    PERFORM pg_advisory_xact_lock(hashtext('jobrunner_app:partitions:' || parent::text));
    IF to_regclass(format('%I.%I', parent_schema, partition_name)) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   parent_schema, partition_name, parent);
    SELECT c.oid::regclass INTO default_partition
    FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';
    IF default_partition IS NOT NULL THEN
        EXECUTE format('WITH moved AS (DELETE FROM %s WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
                       'INSERT INTO %I.%I SELECT * FROM moved', default_partition, parent_schema, partition_name)
            USING lower_bound, upper_bound;
    END IF;
    -- ATTACH builds the parent's indexes (primary key included) on the new table
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                   parent, parent_schema, partition_name, lower_bound, upper_bound);
    PERFORM public.protect_partition(format('%I.%I', parent_schema, partition_name)::regclass);
    RETURN partition_name;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.create_month_partition(regclass, date) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.create_month_partition(regclass, date) TO jobrunner_worker, service_role;
