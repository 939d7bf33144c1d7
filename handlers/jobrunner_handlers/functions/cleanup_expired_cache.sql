-- Deletes up to max_rows expired cache entries (oldest first); returns how many. Call again
-- while it returns max_rows: bounded batches keep each transaction short.

CREATE OR REPLACE FUNCTION public.cleanup_expired_cache(max_rows integer DEFAULT 10000) RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH expired AS (
        SELECT id FROM public.ai_response_cache
        WHERE expires_at < now()
        ORDER BY expires_at
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM public.ai_response_cache AS c USING expired WHERE c.id = expired.id RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.cleanup_expired_cache(integer) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.cleanup_expired_cache(integer) TO jobrunner_worker, service_role;
