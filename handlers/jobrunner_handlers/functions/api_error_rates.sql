-- The backend document's "error rate" query: per endpoint over the last `p_window`, the share of
-- requests that failed on the server's side (5xx), and the client errors (4xx, 429 included)
-- beside it; the worst first.
-- requires: api_endpoint_stats

CREATE OR REPLACE FUNCTION public.api_error_rates(p_window interval DEFAULT interval '1 hour')
RETURNS TABLE (endpoint text, requests bigint, server_errors bigint, client_errors bigint, error_rate float8)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.endpoint, s.requests, s.responses_5xx, s.responses_4xx, s.responses_5xx::float8 / s.requests
    FROM public.api_endpoint_stats(p_window) AS s
    ORDER BY 5 DESC, s.endpoint
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.api_error_rates(interval) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.api_error_rates(interval) TO jobrunner_worker, service_role;
