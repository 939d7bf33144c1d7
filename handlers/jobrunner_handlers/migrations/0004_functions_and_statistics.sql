-- The SQL functions the app's docs name, the per-user statistics view, and the rate limiter.

-- true: the request may proceed (and is counted); false: over the limit for this minute.
-- One statement: the INSERT takes the window row's lock, ON CONFLICT re-reads the newest version,
-- so concurrent callers are counted one after another and exactly max_per_minute get true.
CREATE OR REPLACE FUNCTION public.check_rate_limit(p_user_id uuid, p_endpoint text, p_max_per_minute integer)
RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, public AS $$
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

CREATE MATERIALIZED VIEW IF NOT EXISTS public.user_statistics_cache AS
WITH glow AS (
    SELECT user_id, count(*) AS analyses, avg(overall_score) AS average_score, max(created_at) AS last_at
    FROM public.glow_analyses GROUP BY user_id
), glow_latest AS (
    SELECT DISTINCT ON (user_id) user_id, overall_score
    FROM public.glow_analyses ORDER BY user_id, created_at DESC, id
), style AS (
    SELECT user_id, count(*) AS analyses, avg(overall_score) AS average_score, max(created_at) AS last_at
    FROM public.style_analyses GROUP BY user_id
), style_latest AS (
    SELECT DISTINCT ON (user_id) user_id, overall_score
    FROM public.style_analyses ORDER BY user_id, created_at DESC, id
), photos AS (
    SELECT user_id, count(*) AS photos, max(created_at) AS last_at FROM public.progress_photos GROUP BY user_id
), users AS (
    SELECT user_id FROM glow UNION SELECT user_id FROM style UNION SELECT user_id FROM photos
)
SELECT u.user_id,
       coalesce(g.analyses, 0)::integer              AS glow_analyses,
       round(g.average_score, 2)                     AS glow_average_score,
       gl.overall_score                              AS glow_latest_score,
       coalesce(s.analyses, 0)::integer              AS style_analyses,
       round(s.average_score, 2)                     AS style_average_score,
       sl.overall_score                              AS style_latest_score,
       coalesce(p.photos, 0)::integer                AS progress_photos,
       greatest(g.last_at, s.last_at, p.last_at)     AS last_activity_at,
       now()                                         AS refreshed_at
FROM users AS u
LEFT JOIN glow AS g USING (user_id)
LEFT JOIN glow_latest AS gl USING (user_id)
LEFT JOIN style AS s USING (user_id)
LEFT JOIN style_latest AS sl USING (user_id)
LEFT JOIN photos AS p USING (user_id);

-- REFRESH ... CONCURRENTLY needs a unique index; readers are never blocked by a refresh.
CREATE UNIQUE INDEX IF NOT EXISTS idx_user_statistics_cache_user ON public.user_statistics_cache (user_id);

CREATE OR REPLACE FUNCTION public.refresh_user_statistics_cache() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY public.user_statistics_cache;
END
$$;

-- A materialized view has no row security: users read their own row through this function.
CREATE OR REPLACE FUNCTION public.get_my_statistics() RETURNS SETOF public.user_statistics_cache
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT * FROM public.user_statistics_cache WHERE user_id = auth.uid()
$$;

-- Deletes up to max_rows expired cache entries (oldest first); returns how many. Call again
-- while it returns max_rows: bounded batches keep each transaction short.
CREATE OR REPLACE FUNCTION public.cleanup_expired_cache(max_rows integer DEFAULT 10000) RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH expired AS (
        SELECT id FROM public.ai_response_cache
        WHERE expires_at < now()
        ORDER BY expires_at
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM public.ai_response_cache AS c USING expired WHERE c.id = expired.id RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

-- Drops api_metrics partitions that ended before now() - retention, deletes older rows that
-- landed in the default partition (bounded), and forgets finished rate-limit windows.
CREATE OR REPLACE FUNCTION public.cleanup_old_metrics(retention interval DEFAULT interval '30 days',
                                                      max_rows integer DEFAULT 10000)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
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

-- The app schema reaching into the queue: `{schema}` is jobrunner's schema, fixed when this
-- migration runs. cleanup_old_data prunes finished jobs through it in bounded batches (the daemon's
-- own pruner does the same continuously; this lets the app's nightly job report it).
CREATE OR REPLACE FUNCTION public.prune_finished_background_jobs(retention interval, max_rows integer)
RETURNS integer
LANGUAGE sql VOLATILE SET search_path = pg_catalog, public AS $$
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
