-- A materialized view has no row security: users read their own row through this function.

CREATE OR REPLACE FUNCTION public.get_my_statistics() RETURNS SETOF public.user_statistics_cache
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM public.user_statistics_cache WHERE user_id = auth.uid()
$$;

-- users only (a caller without a JWT `sub` would get nothing anyway)
REVOKE ALL ON FUNCTION public.get_my_statistics() FROM PUBLIC, anon, service_role;
GRANT EXECUTE ON FUNCTION public.get_my_statistics() TO authenticated;
