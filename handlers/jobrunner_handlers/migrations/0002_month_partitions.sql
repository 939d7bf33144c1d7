-- Month partitions for the app's time-series tables (range on created_at, months in UTC).
-- Partitions are named <table>_pYYYY_MM; every partitioned table also has a <table>_default
-- partition so an insert never fails for want of a partition. These functions are SECURITY
-- DEFINER (run as the migrating owner) so the worker role can keep partitions without DDL rights.

-- A partition is a table of its own: row security and the privileges set on the parent do not
-- apply when it is queried directly, and Supabase's default privileges grant `anon` and
-- `authenticated` everything on new tables in `public`. Lock each partition down.
CREATE OR REPLACE FUNCTION public.protect_partition(partition regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    r text;
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', partition);
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', partition);
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON %s FROM %I', partition, r);
        END IF;
    END LOOP;
END
$$;

-- The month partitions of `parent` with their bounds (the default partition is not listed).
CREATE OR REPLACE FUNCTION public.month_partitions(parent regclass)
RETURNS TABLE (partition regclass, range_start timestamptz, range_end timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, public AS $$
    SELECT c.oid::regclass,
           (regexp_match(b.bound, 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(b.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) AS b
    WHERE i.inhparent = parent AND b.bound <> 'DEFAULT'
    ORDER BY 2
$$;

-- Create the partition of `parent` holding the month of `month` (UTC), unless it exists. Rows
-- that already landed in the default partition for that month move into the new partition
-- (ATTACH would refuse them otherwise). Returns the new partition's name, NULL when it existed.
CREATE OR REPLACE FUNCTION public.create_month_partition(parent regclass, month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET lock_timeout = '10s' AS $$
DECLARE
    first_day date := date_trunc('month', month)::date;
    lower_bound timestamptz := first_day::timestamp AT TIME ZONE 'UTC';
    upper_bound timestamptz := (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    parent_schema text;
    parent_name text;
    partition_name text;
    default_partition regclass;
BEGIN
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

-- The app's partitioned tables: the one list every maintenance function below walks.
CREATE OR REPLACE FUNCTION public.app_partitioned_tables() RETURNS regclass[]
LANGUAGE sql STABLE SET search_path = pg_catalog, public AS $$
    SELECT array_agg(c.oid::regclass ORDER BY c.relname)
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind = 'p'
      AND c.relname IN ('glow_analyses', 'style_analyses', 'progress_photos', 'api_metrics')
$$;

-- Partitions for `months` months from the month of `from_month` (default: this month, UTC) for
-- every partitioned app table. Returns the partitions created.
CREATE OR REPLACE FUNCTION public.create_upcoming_partitions(months integer DEFAULT 3, from_month date DEFAULT NULL)
RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    start_month date := date_trunc('month', coalesce(from_month, (now() AT TIME ZONE 'UTC')::date))::date;
    parent regclass;
    created text[] := ARRAY[]::text[];
    created_name text;
BEGIN
    FOREACH parent IN ARRAY coalesce(public.app_partitioned_tables(), ARRAY[]::regclass[]) LOOP
        FOR step IN 0 .. greatest(months, 1) - 1 LOOP
            created_name := public.create_month_partition(parent, (start_month + make_interval(months => step))::date);
            IF created_name IS NOT NULL THEN
                created := created || created_name;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

-- Detach and drop the month partitions of `parent` that end at or before `cutoff`. DETACH takes
-- a short ACCESS EXCLUSIVE lock on the parent; lock_timeout keeps it from queueing behind a long
-- reader (the job then fails and retries later). Returns the partitions dropped.
CREATE OR REPLACE FUNCTION public.drop_month_partitions_before(parent regclass, cutoff timestamptz)
RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET lock_timeout = '5s' AS $$
DECLARE
    p record;
    dropped text[] := ARRAY[]::text[];
BEGIN
    FOR p IN SELECT * FROM public.month_partitions(parent) WHERE range_end <= cutoff LOOP
        dropped := dropped || p.partition::text;
        EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, p.partition);
        EXECUTE format('DROP TABLE %s', p.partition);
    END LOOP;
    RETURN dropped;
END
$$;

-- One partition (archived first by the caller): detach and drop it.
CREATE OR REPLACE FUNCTION public.drop_month_partition(parent regclass, partition regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET lock_timeout = '5s' AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.month_partitions(parent) AS m WHERE m.partition = drop_month_partition.partition) THEN
        RAISE EXCEPTION '% is not a month partition of %', partition, parent;
    END IF;
    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, partition);
    EXECUTE format('DROP TABLE %s', partition);
END
$$;

-- Rows of one partition as JSON, in (created_at, id) order after the given key, for archiving in
-- bounded pages.
CREATE OR REPLACE FUNCTION public.partition_rows_page(
    partition regclass, after_created_at timestamptz, after_id uuid, page_size integer
) RETURNS TABLE (created_at timestamptz, id uuid, row_json jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT t.created_at, t.id, to_jsonb(t) FROM %s AS t '
        'WHERE $1 IS NULL OR (t.created_at, t.id) > ($1, $2) ORDER BY t.created_at, t.id LIMIT $3', partition)
    USING after_created_at, after_id, page_size;
END
$$;
