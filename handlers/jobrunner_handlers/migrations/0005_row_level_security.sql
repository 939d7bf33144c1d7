-- Row security on every app table. Users (`authenticated`, identified by auth.uid()) see only their
-- own rows and change only what the app lets them; analyses and recommendations are written by the
-- worker role (jobrunner_worker, from the core's migrations) alone. `service_role` bypasses row
-- security (Supabase's admin key). `anon` gets the active catalog and nothing else.

ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.glow_analyses ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.style_analyses ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.progress_photos ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.api_metrics ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.products ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.product_recommendations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.push_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.ai_response_cache ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.api_rate_limits ENABLE ROW LEVEL SECURITY;

-- Start from nothing (Supabase grants anon/authenticated everything in public by default), then
-- grant what each role needs; the policies below narrow it to rows.
REVOKE ALL ON public.profiles, public.glow_analyses, public.style_analyses, public.progress_photos,
    public.api_metrics, public.products, public.product_recommendations, public.push_tokens,
    public.notifications, public.ai_response_cache, public.api_rate_limits, public.user_statistics_cache
    FROM PUBLIC, anon, authenticated;

GRANT SELECT, INSERT, UPDATE ON public.profiles TO authenticated;
GRANT SELECT ON public.glow_analyses, public.style_analyses, public.product_recommendations,
    public.notifications TO authenticated;
GRANT SELECT, INSERT, UPDATE (note), DELETE ON public.progress_photos TO authenticated;
GRANT SELECT, INSERT, UPDATE (active, platform, updated_at), DELETE ON public.push_tokens TO authenticated;
GRANT SELECT ON public.products TO anon, authenticated;

GRANT SELECT, INSERT, UPDATE, DELETE ON public.profiles, public.glow_analyses, public.style_analyses,
    public.progress_photos, public.api_metrics, public.products, public.product_recommendations,
    public.push_tokens, public.notifications, public.ai_response_cache, public.api_rate_limits
    TO jobrunner_worker, service_role;
GRANT SELECT ON public.user_statistics_cache TO jobrunner_worker, service_role;

-- profiles: the row whose id is the user
DROP POLICY IF EXISTS profiles_own ON public.profiles;
CREATE POLICY profiles_own ON public.profiles FOR ALL TO authenticated
    USING (id = (SELECT auth.uid())) WITH CHECK (id = (SELECT auth.uid()));

-- analyses and recommendations: users read their own; only the worker writes
DROP POLICY IF EXISTS glow_analyses_read_own ON public.glow_analyses;
CREATE POLICY glow_analyses_read_own ON public.glow_analyses FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS style_analyses_read_own ON public.style_analyses;
CREATE POLICY style_analyses_read_own ON public.style_analyses FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS product_recommendations_read_own ON public.product_recommendations;
CREATE POLICY product_recommendations_read_own ON public.product_recommendations FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS notifications_read_own ON public.notifications;
CREATE POLICY notifications_read_own ON public.notifications FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));

-- uploads and push tokens: the user's own, which they add and remove
DROP POLICY IF EXISTS progress_photos_own ON public.progress_photos;
CREATE POLICY progress_photos_own ON public.progress_photos FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS push_tokens_own ON public.push_tokens;
CREATE POLICY push_tokens_own ON public.push_tokens FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));

DROP POLICY IF EXISTS products_read_active ON public.products;
CREATE POLICY products_read_active ON public.products FOR SELECT TO anon, authenticated USING (active);

-- the worker: everything, on every app table
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['profiles', 'glow_analyses', 'style_analyses', 'progress_photos', 'api_metrics',
                             'products', 'product_recommendations', 'push_tokens', 'notifications',
                             'ai_response_cache', 'api_rate_limits'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS %I ON public.%I', t || '_worker_all', t);
        EXECUTE format('CREATE POLICY %I ON public.%I FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true)',
                       t || '_worker_all', t);
    END LOOP;
END
$$;

-- Functions: PUBLIC may execute any new function by default; keep the maintenance ones for the
-- worker and the admin role. check_rate_limit takes any user id, so users must not call it
-- directly (they could spend someone else's quota): the Edge Functions call it with the service key.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'public.protect_partition(regclass)', 'public.create_month_partition(regclass, date)',
        'public.create_upcoming_partitions(integer, date)',
        'public.drop_month_partitions_before(regclass, timestamptz)',
        'public.drop_month_partition(regclass, regclass)',
        'public.partition_rows_page(regclass, timestamptz, uuid, integer)',
        'public.check_rate_limit(uuid, text, integer)', 'public.refresh_user_statistics_cache()',
        'public.cleanup_expired_cache(integer)', 'public.cleanup_old_metrics(interval, integer)',
        'public.prune_finished_background_jobs(interval, integer)']::regprocedure[] LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon, authenticated', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO jobrunner_worker, service_role', f);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION public.get_my_statistics() TO authenticated;
