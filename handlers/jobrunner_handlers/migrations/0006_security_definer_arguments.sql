-- The partition functions run as the migrating owner (SECURITY DEFINER) and take a regclass: each
-- now accepts only the app's own partitioned tables (a fixed list) or their partitions (checked in
-- pg_inherits), so the worker role cannot aim them at auth.users, the catalog or the queue. Every
-- app function gets `search_path = pg_catalog, pg_temp`: pg_temp is searched first unless it is
-- named, and nothing then resolves in a schema another role could create objects in; the bodies
-- qualify every app object with `public.`.

-- The one list of the app's partitioned tables (those that exist), by fixed name.
CREATE OR REPLACE FUNCTION public.app_partitioned_tables() RETURNS regclass[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(t.oid ORDER BY t.name), ARRAY[]::regclass[])
    FROM (
        SELECT name, to_regclass('public.' || name) AS oid
        FROM unnest(ARRAY['api_metrics', 'glow_analyses', 'progress_photos', 'style_analyses']) AS name
    ) AS t
    WHERE t.oid IS NOT NULL
$$;

-- `parent` itself, when it is one of the app's partitioned tables; an error otherwise.
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

-- The parent of `partition`, when it is a partition (a plain table, the default partition
-- included) of one of the app's partitioned tables; an error otherwise.
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

CREATE OR REPLACE FUNCTION public.month_partitions(parent regclass)
RETURNS TABLE (partition regclass, range_start timestamptz, range_end timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.oid::regclass,
           (regexp_match(b.bound, 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(b.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) AS b
    WHERE i.inhparent = parent AND b.bound <> 'DEFAULT'
    ORDER BY 2
$$;

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
            created_name := public.create_month_partition(parent, (start_month + make_interval(months => step))::date);
            IF created_name IS NOT NULL THEN
                created := created || created_name;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

-- Returns the dropped partitions' names (unqualified, as before).
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

CREATE OR REPLACE FUNCTION public.partition_rows_page(
    partition regclass, after_created_at timestamptz, after_id uuid, page_size integer
) RETURNS TABLE (created_at timestamptz, id uuid, row_json jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM public.require_app_partition(partition);
    RETURN QUERY EXECUTE format(
        'SELECT t.created_at, t.id, to_jsonb(t) FROM %s AS t '
        'WHERE $1 IS NULL OR (t.created_at, t.id) > ($1, $2) ORDER BY t.created_at, t.id LIMIT $3', partition)
    USING after_created_at, after_id, page_size;
END
$$;

-- The other app functions: their bodies already qualify every app object.
ALTER FUNCTION public.check_rate_limit(uuid, text, integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION public.refresh_user_statistics_cache() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION public.get_my_statistics() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION public.cleanup_expired_cache(integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION public.cleanup_old_metrics(interval, integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION public.prune_finished_background_jobs(interval, integer) SET search_path = pg_catalog, pg_temp;

-- The new helpers: for the owner's functions and the worker, not for PUBLIC (nor, on Supabase,
-- for anon/authenticated, whom default privileges grant every new function).
REVOKE ALL ON FUNCTION public.require_app_partitioned_table(regclass), public.require_app_partition(regclass)
    FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.require_app_partitioned_table(regclass), public.require_app_partition(regclass)
    TO jobrunner_worker, service_role;
