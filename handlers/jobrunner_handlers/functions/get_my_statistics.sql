-- A materialized view has no row security: users read their own row through this function.

CREATE OR REPLACE FUNCTION public.get_my_statistics() RETURNS SETOF public.user_statistics_cache
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM public.user_statistics_cache WHERE user_id = auth.uid()
$$;

GRANT EXECUTE ON FUNCTION public.get_my_statistics() TO authenticated;
