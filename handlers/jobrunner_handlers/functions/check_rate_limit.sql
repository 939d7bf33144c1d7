-- The rate limiter, per user and endpoint class, in fixed one-minute windows: true, the request
-- may proceed; false, it is over its class's limit (public.api_rate_limit_classes: analysis 100,
-- general 200, uploads 20 a minute unless changed there; 0 refuses every request). Every call is
-- counted in its window row (request_count), and the refused ones again (refused_count), so
-- refusals can be seen and alerted on (api_rate_limit_refusals).
--
-- One statement does the counting: the INSERT takes the window row's lock and ON CONFLICT
-- re-reads its newest version, so concurrent calls get the ordinals 1, 2, 3, ... of their
-- window, and exactly the first max_per_minute are admitted. A call counts in the minute its
-- transaction started (now()): each API request is a transaction of its own.
--
-- Two callers: an Edge Function with the service key names the user (check_rate_limit(user,
-- class), service_role and the worker only); a user's own request is counted for its JWT's user
-- (check_rate_limit(class), authenticated), never for a user the caller names.
-- requires: require_request_user

CREATE OR REPLACE FUNCTION public.check_rate_limit(p_user_id uuid, p_endpoint_class text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    max_requests integer;
    admitted boolean;
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION 'check_rate_limit: no user to count the request for'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.max_per_minute INTO max_requests
    FROM public.api_rate_limit_classes AS c WHERE c.endpoint_class = p_endpoint_class;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'check_rate_limit: unknown endpoint class %', quote_literal(left(p_endpoint_class, 64))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'the classes are the rows of public.api_rate_limit_classes';
    END IF;
    INSERT INTO public.api_rate_limits AS r (user_id, endpoint, window_start, request_count, refused_count)
    VALUES (p_user_id, p_endpoint_class, date_trunc('minute', now()), 1,
            CASE WHEN max_requests < 1 THEN 1 ELSE 0 END)
    ON CONFLICT (user_id, endpoint, window_start) DO UPDATE
    SET request_count = r.request_count + 1,
        refused_count = r.refused_count + CASE WHEN r.request_count + 1 > max_requests THEN 1 ELSE 0 END
    RETURNING r.request_count <= max_requests INTO admitted;
    RETURN admitted;
END
$$;

CREATE OR REPLACE FUNCTION public.check_rate_limit(p_endpoint_class text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT public.check_rate_limit(public.require_request_user(), p_endpoint_class)
$$;

-- Supabase grants anon/authenticated every new function: each variant to its callers only
REVOKE ALL ON FUNCTION public.check_rate_limit(uuid, text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.check_rate_limit(uuid, text) TO jobrunner_worker, service_role;
REVOKE ALL ON FUNCTION public.check_rate_limit(text) FROM PUBLIC, anon, service_role;
GRANT EXECUTE ON FUNCTION public.check_rate_limit(text) TO authenticated;
