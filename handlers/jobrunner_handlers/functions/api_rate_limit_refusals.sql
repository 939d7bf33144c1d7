-- Rate-limited requests per endpoint class over the last `p_window` (1 minute to 1 day; the
-- window rows are kept for an hour by cleanup_old_metrics): calls counted, calls refused, and
-- the users refused at least once. What the rate-limit alert reads (the daemon's app sampler
-- exports it) and what an operator asks when it fires.

CREATE OR REPLACE FUNCTION public.api_rate_limit_refusals(p_window interval DEFAULT interval '5 minutes')
RETURNS TABLE (endpoint_class text, requests bigint, refused bigint, users_refused bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_window IS NULL OR p_window < interval '1 minute' OR p_window > interval '1 day' THEN
        RAISE EXCEPTION 'api_rate_limit_refusals: the window must be 1 minute to 1 day'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT r.endpoint, sum(r.request_count)::bigint, sum(r.refused_count)::bigint,
           count(DISTINCT r.user_id) FILTER (WHERE r.refused_count > 0)
    FROM public.api_rate_limits AS r
    WHERE r.window_start > now() - p_window
    GROUP BY r.endpoint
    ORDER BY r.endpoint;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.api_rate_limit_refusals(interval) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.api_rate_limit_refusals(interval) TO jobrunner_worker, service_role;
