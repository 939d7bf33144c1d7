-- The request's user: auth.uid(), the sub of the JWT the request carries; an error when it
-- carries none (the anon key, the service key, a token without a sub). The functions that act
-- for the caller start with it (check_rate_limit(class), touch_my_last_active, get_my_*), so none
-- of them ever falls back to a user the caller names.

CREATE OR REPLACE FUNCTION public.require_request_user() RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    caller uuid := auth.uid();
BEGIN
    IF caller IS NULL THEN
        RAISE EXCEPTION 'the request carries no user (a JWT with a sub)' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN caller;
END
$$;

-- users only: the get_my_* functions run as the user and call it
REVOKE ALL ON FUNCTION public.require_request_user() FROM PUBLIC, anon, service_role;
GRANT EXECUTE ON FUNCTION public.require_request_user() TO authenticated;
