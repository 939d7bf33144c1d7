-- Refreshes the per-user statistics view without blocking its readers.

CREATE OR REPLACE FUNCTION public.refresh_user_statistics_cache() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY public.user_statistics_cache;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.refresh_user_statistics_cache() FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.refresh_user_statistics_cache() TO jobrunner_worker, service_role;
