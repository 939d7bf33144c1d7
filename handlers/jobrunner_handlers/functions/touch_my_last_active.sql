-- A user's own "I am here": marks the caller's profile active now (the JWT's user, never another),
-- by record_user_activity's rule. Users may not write last_active_at themselves (a time they
-- choose would count them active for good). Returns whether it marked the profile (false: marked
-- within the last minute already, or no profile yet).
-- requires: record_user_activity

CREATE OR REPLACE FUNCTION public.touch_my_last_active() RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me uuid := auth.uid();
BEGIN
    IF me IS NULL THEN
        RAISE EXCEPTION 'touch_my_last_active: the request carries no user (a JWT with a sub)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN public.record_user_activity(ARRAY[me]) = 1;
END
$$;

REVOKE ALL ON FUNCTION public.touch_my_last_active() FROM PUBLIC, anon, service_role;
GRANT EXECUTE ON FUNCTION public.touch_my_last_active() TO authenticated;
