-- The app schema reaching into the queue: jobrunner's schema is filled in when this file is
-- applied. cleanup_old_data prunes finished jobs through it in bounded batches.

CREATE OR REPLACE FUNCTION public.prune_finished_background_jobs(retention interval, max_rows integer)
RETURNS integer
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH old AS (
        SELECT id FROM {schema}.background_jobs
        WHERE finished_at < now() - retention AND status IN ('completed', 'failed', 'dead', 'cancelled')
        ORDER BY finished_at
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM {schema}.background_jobs AS j USING old WHERE j.id = old.id RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.prune_finished_background_jobs(interval, integer) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.prune_finished_background_jobs(interval, integer) TO jobrunner_worker, service_role;
