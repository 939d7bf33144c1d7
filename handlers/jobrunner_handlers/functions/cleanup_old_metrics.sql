-- Drops api_metrics partitions that ended before now() - retention, deletes older rows that
-- landed in the default partition (bounded), and forgets finished rate-limit windows.
-- requires: drop_month_partitions_before

CREATE OR REPLACE FUNCTION public.cleanup_old_metrics(retention interval DEFAULT interval '30 days',
                                                      max_rows integer DEFAULT 10000)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff timestamptz := now() - retention;
    dropped text[];
    default_rows integer;
    windows integer;
BEGIN
    dropped := public.drop_month_partitions_before('public.api_metrics'::regclass, cutoff);
    WITH old AS (
        SELECT id, created_at FROM public.api_metrics_default
        WHERE created_at < cutoff ORDER BY created_at LIMIT max_rows
    ), gone AS (
        DELETE FROM public.api_metrics_default AS m USING old
        WHERE m.id = old.id AND m.created_at = old.created_at RETURNING 1
    )
    SELECT count(*) INTO default_rows FROM gone;
    WITH old AS (
        SELECT user_id, endpoint, window_start FROM public.api_rate_limits
        WHERE window_start < now() - interval '1 hour' ORDER BY window_start LIMIT max_rows
    ), gone AS (
        DELETE FROM public.api_rate_limits AS r USING old
        WHERE (r.user_id, r.endpoint, r.window_start) = (old.user_id, old.endpoint, old.window_start) RETURNING 1
    )
    SELECT count(*) INTO windows FROM gone;
    RETURN jsonb_build_object('dropped_partitions', to_jsonb(dropped),
                              'deleted_default_rows', default_rows,
                              'deleted_rate_limit_windows', windows);
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.cleanup_old_metrics(interval, integer) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.cleanup_old_metrics(interval, integer) TO jobrunner_worker, service_role;
