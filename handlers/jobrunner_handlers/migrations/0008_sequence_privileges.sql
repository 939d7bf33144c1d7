-- On Supabase, default privileges give anon/authenticated USAGE, SELECT and UPDATE on every new
-- sequence in public: with them `setval('ai_response_cache_id_seq', 9223372036854775807)` makes
-- every later insert fail. Revoke them on every sequence owned by an app table (identity and
-- serial columns alike). Identity columns need no privilege on their sequence to insert; the
-- worker and the admin role keep USAGE for serial columns.
DO $$
DECLARE
    seq regclass;
BEGIN
    FOR seq IN
        SELECT DISTINCT s.oid::regclass
        FROM pg_class AS s
        JOIN pg_depend AS d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
                            AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        JOIN pg_class AS t ON t.oid = d.refobjid
        WHERE s.relkind = 'S' AND t.relnamespace = 'public'::regnamespace
          AND t.relname IN ('profiles', 'glow_analyses', 'style_analyses', 'progress_photos', 'api_metrics',
                            'products', 'product_recommendations', 'push_tokens', 'notifications',
                            'ai_response_cache', 'api_rate_limits', 'user_upload_buckets')
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM PUBLIC, anon, authenticated', seq);
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO jobrunner_worker, service_role', seq);
    END LOOP;
END
$$;
