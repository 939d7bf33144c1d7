-- Marks users active now (profiles.last_active_at), a batch of user ids at a time: what the API
-- layer calls (with the service key) for the users whose requests it served, and what
-- record_api_requests calls for every batch of requests it records. At most 1000 ids a call.
-- A profile already marked within the last minute is left alone, so a busy user's row is not
-- rewritten on every batch; rows another call is marking at this moment are skipped (SKIP
-- LOCKED: it writes the same time), so concurrent batches never wait on each other or deadlock.
-- Ids without a profile are ignored. Returns how many profiles it marked.

CREATE OR REPLACE FUNCTION public.record_user_activity(p_user_ids uuid[]) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    marked integer;
BEGIN
    IF p_user_ids IS NULL OR array_ndims(p_user_ids) > 1 OR cardinality(p_user_ids) > 1000 THEN
        RAISE EXCEPTION 'record_user_activity: at most 1000 user ids in a one-dimensional array'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH due AS (
        SELECT p.id FROM public.profiles AS p
        WHERE p.id = ANY (p_user_ids)
          AND (p.last_active_at IS NULL OR p.last_active_at < now() - interval '1 minute')
        ORDER BY p.id
        FOR UPDATE SKIP LOCKED
    )
    UPDATE public.profiles AS p SET last_active_at = now() FROM due WHERE p.id = due.id;
    GET DIAGNOSTICS marked = ROW_COUNT;
    RETURN marked;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.record_user_activity(uuid[]) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.record_user_activity(uuid[]) TO jobrunner_worker, service_role;
