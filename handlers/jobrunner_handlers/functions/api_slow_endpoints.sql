-- The backend document's "slow endpoints" query: endpoints whose 95th-percentile response time
-- over the last `p_window` is above `p_threshold_ms`, slowest first.
-- requires: api_endpoint_stats

CREATE OR REPLACE FUNCTION public.api_slow_endpoints(
    p_window       interval DEFAULT interval '1 hour',
    p_threshold_ms integer  DEFAULT 2000
) RETURNS TABLE (endpoint text, requests bigint, slow bigint, avg_ms float8, p95_ms float8, max_ms integer)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.endpoint, s.requests, s.slow, s.avg_ms, s.p95_ms, s.max_ms
    FROM public.api_endpoint_stats(p_window, p_threshold_ms) AS s
    WHERE s.p95_ms > p_threshold_ms
    ORDER BY s.p95_ms DESC, s.endpoint
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.api_slow_endpoints(interval, integer) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.api_slow_endpoints(interval, integer) TO jobrunner_worker, service_role;
