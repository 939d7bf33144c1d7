-- A user's own "I am here": marks the caller's profile active now (the JWT's user, never another),
-- by record_user_activity's rule. Users may not write last_active_at themselves (a time they
-- choose would count them active for good). Returns whether it marked the profile (false: marked
-- within the last minute already, or no profile yet).
-- requires: record_user_activity, require_request_user

CREATE OR REPLACE FUNCTION public.touch_my_last_active() RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT public.record_user_activity(ARRAY[public.require_request_user()]) = 1
$$;

REVOKE ALL ON FUNCTION public.touch_my_last_active() FROM PUBLIC, anon, service_role;
GRANT EXECUTE ON FUNCTION public.touch_my_last_active() TO authenticated;
