-- The backend document's "active users" query: users seen within the last `p_window` (1 minute
-- to 31 days), by profiles.last_active_at, which record_api_requests and record_user_activity
-- keep (to the minute) for every user the API serves. Counts a range of idx_profiles_last_active
-- instead of the distinct users of a day of api_metrics rows.

CREATE OR REPLACE FUNCTION public.api_active_users(p_window interval DEFAULT interval '24 hours') RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_window IS NULL OR p_window < interval '1 minute' OR p_window > interval '31 days' THEN
        RAISE EXCEPTION 'api_active_users: the window must be 1 minute to 31 days'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (SELECT count(*) FROM public.profiles AS p WHERE p.last_active_at > now() - p_window);
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.api_active_users(interval) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.api_active_users(interval) TO jobrunner_worker, service_role;
