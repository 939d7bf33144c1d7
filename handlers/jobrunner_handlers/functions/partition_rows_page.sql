-- Rows of one partition as JSON, in (created_at, id) order after the given key, for archiving in
-- bounded pages.
-- requires: require_app_partition

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

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.partition_rows_page(regclass, timestamptz, uuid, integer) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.partition_rows_page(regclass, timestamptz, uuid, integer) TO jobrunner_worker, service_role;
