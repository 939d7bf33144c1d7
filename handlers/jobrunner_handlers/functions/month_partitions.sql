-- The month partitions of `parent` with their bounds (the default partition is not listed).
-- Partitions are named <table>_pYYYY_MM and cover one month in UTC.

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
