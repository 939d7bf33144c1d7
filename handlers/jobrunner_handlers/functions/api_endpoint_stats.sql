-- What the API's requests looked like over the last `p_window` (1 minute to 31 days), per
-- endpoint: how many, by status class, rate-limited (429), failed for want of the database
-- (error_kind 'database'), slower than `p_slow_ms`, and their response times (mean, 95th
-- percentile, max). The backend document's monitoring queries (api_slow_endpoints,
-- api_error_rates) read it, and so does the daemon's app sampler, with `p_label_endpoints`: then
-- an endpoint without a row in api_metric_endpoints is counted as `__other__`, so the metrics'
-- labels stay a bounded set. Walks idx_api_metrics_created in the partitions the window touches.

CREATE OR REPLACE FUNCTION public.api_endpoint_stats(
    p_window          interval DEFAULT interval '5 minutes',
    p_slow_ms         integer  DEFAULT 2000,
    p_label_endpoints boolean  DEFAULT false
) RETURNS TABLE (endpoint text, requests bigint, responses_1xx bigint, responses_2xx bigint, responses_3xx bigint,
                 responses_4xx bigint, responses_5xx bigint, rate_limited bigint, database_errors bigint,
                 slow bigint, avg_ms float8, p95_ms float8, max_ms integer)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_window IS NULL OR p_window < interval '1 minute' OR p_window > interval '31 days' THEN
        RAISE EXCEPTION 'api_endpoint_stats: the window must be 1 minute to 31 days'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_slow_ms IS NULL OR p_slow_ms < 0 THEN
        RAISE EXCEPTION 'api_endpoint_stats: p_slow_ms must be 0 or more' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT CASE WHEN NOT coalesce(p_label_endpoints, false) OR k.endpoint IS NOT NULL THEN m.endpoint
                ELSE '__other__' END AS label,
           count(*),
           count(*) FILTER (WHERE m.status_code < 200),
           count(*) FILTER (WHERE m.status_code BETWEEN 200 AND 299),
           count(*) FILTER (WHERE m.status_code BETWEEN 300 AND 399),
           count(*) FILTER (WHERE m.status_code BETWEEN 400 AND 499),
           count(*) FILTER (WHERE m.status_code >= 500),
           count(*) FILTER (WHERE m.status_code = 429),
           count(*) FILTER (WHERE m.error_kind = 'database'),
           count(*) FILTER (WHERE m.response_time_ms > p_slow_ms),
           avg(m.response_time_ms)::float8,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY m.response_time_ms)::float8,
           max(m.response_time_ms)
    FROM public.api_metrics AS m
    LEFT JOIN public.api_metric_endpoints AS k ON k.endpoint = m.endpoint
    WHERE m.created_at > now() - p_window
    GROUP BY 1
    ORDER BY 1;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.api_endpoint_stats(interval, integer, boolean) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.api_endpoint_stats(interval, integer, boolean) TO jobrunner_worker, service_role;
