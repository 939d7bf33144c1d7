-- The rate limiter: true, the request may proceed (and is counted); false, over the limit for
-- this minute. One statement: the INSERT takes the window row's lock, ON CONFLICT re-reads the
-- newest version, so concurrent callers are counted one after another and exactly max_per_minute
-- get true. It takes any user id, so users must not call it directly (they could spend someone
-- else's quota): the Edge Functions call it with the service key.

CREATE OR REPLACE FUNCTION public.check_rate_limit(p_user_id uuid, p_endpoint text, p_max_per_minute integer)
RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH counted AS (
        INSERT INTO public.api_rate_limits AS r (user_id, endpoint, window_start, request_count)
        SELECT p_user_id, p_endpoint, date_trunc('minute', clock_timestamp()), 1
        WHERE p_max_per_minute > 0
        ON CONFLICT (user_id, endpoint, window_start)
        DO UPDATE SET request_count = r.request_count + 1
        WHERE r.request_count < p_max_per_minute
        RETURNING 1
    )
    SELECT count(*) > 0 FROM counted
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.check_rate_limit(uuid, text, integer) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.check_rate_limit(uuid, text, integer) TO jobrunner_worker, service_role;
