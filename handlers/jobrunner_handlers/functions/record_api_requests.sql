-- Records a batch of the API's requests in api_metrics, in one call: what the app's API layer
-- (Edge Functions, with the service key) sends every few seconds or every few hundred requests.
-- `p_requests` is a JSON array of at most 1000 objects:
--
--   {"endpoint": "analyze-image",   1-100 of A-Z a-z 0-9 _ . / : -  (a name, not a URL with ids)
--    "status_code": 200,            100-599
--    "response_time_ms": 840,       0-3600000
--    "method": "POST",              optional: GET POST PUT PATCH DELETE HEAD OPTIONS
--    "user_id": "<uuid>",           optional
--    "error_kind": "database",      optional: database, timeout, upstream, internal
--    "at": "2026-03-01T12:00:00Z"}  optional (default: now), within the last day
--
-- A batch with any invalid request is refused whole, naming the first (by its position from 1)
-- and what is wrong with it: the API layer's bug shows at once instead of as skewed numbers.
-- The batch's endpoints get a label of their own in the metrics while fewer than 50 have one
-- (api_metric_endpoints), and its users are marked active (record_user_activity). Runs with the
-- caller's rights; returns the number of requests recorded.
-- requires: record_user_activity

CREATE OR REPLACE FUNCTION public.record_api_requests(p_requests jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad record;
    recorded integer;
BEGIN
    IF p_requests IS NULL OR jsonb_typeof(p_requests) <> 'array' OR jsonb_array_length(p_requests) > 1000 THEN
        RAISE EXCEPTION 'record_api_requests: a JSON array of at most 1000 requests'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT e.i, e.problem INTO bad
    FROM (
        SELECT a.i, CASE
            WHEN jsonb_typeof(a.r) <> 'object' THEN 'is not a JSON object'
            WHEN a.r - ARRAY['endpoint', 'status_code', 'response_time_ms', 'method', 'user_id', 'error_kind', 'at']
                 <> '{}'::jsonb
                THEN 'has a key other than endpoint, status_code, response_time_ms, method, user_id, error_kind, at'
            WHEN jsonb_typeof(a.r -> 'endpoint') IS DISTINCT FROM 'string'
                 OR NOT (a.r ->> 'endpoint') ~ '^[A-Za-z0-9_./:-]{1,100}$'
                THEN 'endpoint is not 1 to 100 of A-Z a-z 0-9 _ . / : -'
            WHEN jsonb_typeof(a.r -> 'status_code') IS DISTINCT FROM 'number'
                 OR NOT (a.r ->> 'status_code') ~ '^[1-5][0-9][0-9]$'
                THEN 'status_code is not an integer from 100 to 599'
            WHEN jsonb_typeof(a.r -> 'response_time_ms') IS DISTINCT FROM 'number'
                 OR NOT (a.r ->> 'response_time_ms') ~ '^[0-9]{1,7}$'
                 OR (a.r ->> 'response_time_ms')::integer > 3600000
                THEN 'response_time_ms is not an integer from 0 to 3600000'
            WHEN coalesce(jsonb_typeof(a.r -> 'method'), 'null') <> 'null'
                 AND (a.r ->> 'method') <> ALL (ARRAY['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'])
                THEN 'method is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS'
            WHEN coalesce(jsonb_typeof(a.r -> 'user_id'), 'null') <> 'null'
                 AND (jsonb_typeof(a.r -> 'user_id') <> 'string'
                      OR NOT (a.r ->> 'user_id') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
                THEN 'user_id is not a UUID'
            WHEN coalesce(jsonb_typeof(a.r -> 'error_kind'), 'null') <> 'null'
                 AND (a.r ->> 'error_kind') <> ALL (ARRAY['database', 'timeout', 'upstream', 'internal'])
                THEN 'error_kind is not one of database, timeout, upstream, internal'
            WHEN coalesce(jsonb_typeof(a.r -> 'at'), 'null') <> 'null'
                 AND (jsonb_typeof(a.r -> 'at') <> 'string'
                      OR NOT (a.r ->> 'at') ~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d(:?\d\d)?)$')
                THEN 'at is not an ISO 8601 time with its offset'
            WHEN coalesce(jsonb_typeof(a.r -> 'at'), 'null') <> 'null'
                 AND NOT (a.r ->> 'at')::timestamptz BETWEEN now() - interval '1 day' AND now() + interval '5 minutes'
                THEN 'at is not within the last day'
            END AS problem
        FROM jsonb_array_elements(p_requests) WITH ORDINALITY AS a(r, i)
    ) AS e
    WHERE e.problem IS NOT NULL
    ORDER BY e.i
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'record_api_requests: request % %', bad.i, bad.problem USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO public.api_metrics (endpoint, method, status_code, response_time_ms, user_id, error_kind, created_at)
    SELECT r ->> 'endpoint', r ->> 'method', (r ->> 'status_code')::integer, (r ->> 'response_time_ms')::integer,
           (r ->> 'user_id')::uuid, r ->> 'error_kind', coalesce((r ->> 'at')::timestamptz, now())
    FROM jsonb_array_elements(p_requests) AS a(r);
    GET DIAGNOSTICS recorded = ROW_COUNT;

    -- new endpoints, while there is room for a label of their own; the lock makes the count exact
    -- and is taken only when the batch names an endpoint without one
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_requests) AS a(r)
               WHERE NOT EXISTS (SELECT 1 FROM public.api_metric_endpoints AS k WHERE k.endpoint = a.r ->> 'endpoint'))
       AND (SELECT count(*) FROM public.api_metric_endpoints) < 50 THEN
        PERFORM pg_advisory_xact_lock(hashtext('jobrunner_app:api_metric_endpoints'));
        INSERT INTO public.api_metric_endpoints (endpoint)
        SELECT n.endpoint
        FROM (SELECT DISTINCT a.r ->> 'endpoint' AS endpoint FROM jsonb_array_elements(p_requests) AS a(r)) AS n
        WHERE NOT EXISTS (SELECT 1 FROM public.api_metric_endpoints AS k WHERE k.endpoint = n.endpoint)
        ORDER BY n.endpoint
        LIMIT greatest(0, 50 - (SELECT count(*) FROM public.api_metric_endpoints))
        ON CONFLICT DO NOTHING;
    END IF;

    PERFORM public.record_user_activity(ARRAY(
        SELECT DISTINCT (a.r ->> 'user_id')::uuid FROM jsonb_array_elements(p_requests) AS a(r)
        WHERE a.r ->> 'user_id' IS NOT NULL));
    RETURN recorded;
END
$$;

-- for the API layer's service key and the worker (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.record_api_requests(jsonb) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.record_api_requests(jsonb) TO jobrunner_worker, service_role;
