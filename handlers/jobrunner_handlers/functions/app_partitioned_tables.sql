-- The one list of the app's partitioned tables (those that exist), by fixed name: the partition
-- functions accept only these tables and their partitions.

CREATE OR REPLACE FUNCTION public.app_partitioned_tables() RETURNS regclass[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(t.oid ORDER BY t.name), ARRAY[]::regclass[])
    FROM (
        SELECT name, to_regclass('public.' || name) AS oid
        FROM unnest(ARRAY['api_metrics', 'glow_analyses', 'progress_photos', 'style_analyses']) AS name
    ) AS t
    WHERE t.oid IS NOT NULL
$$;
