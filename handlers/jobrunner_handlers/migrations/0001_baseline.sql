-- The app's schema: Supabase's stand-ins, the app's tables, its statistics view, row security and
-- privileges. The app's functions live one per file in ../functions/ (their current text);
-- `jobrunner migrate` creates them where the `jobrunner:functions` line below says, and
-- re-applies a file whenever it changes.
--
-- The app's tables live in `public` (the schema PostgREST exposes to the mobile app), whatever
-- jobrunner's own schema (where background_jobs lives); the app never reaches into the queue's
-- tables (finished jobs are the core pruner's). The core's roles (jobrunner_worker) exist: the
-- core's migrations run first. A database may hold several jobrunner schemas, each migrating
-- the app into the same `public`: every statement here may run a second time, hence IF NOT
-- EXISTS and DROP POLICY IF EXISTS.

-- == What Supabase provides ====================================================================
-- Plain PostgreSQL (tests, the embedded server) lacks the roles `anon`, `authenticated`,
-- `service_role`, the schema `auth` and `auth.uid()`. Each is created only where it is missing,
-- so the same file runs unchanged on Supabase, where all of them exist (auth.uid() is therefore
-- no function file: re-applying it would replace Supabase's own).

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                IF r = 'service_role' THEN
                    -- as on Supabase: the admin API key's role is not subject to row security
                    EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT BYPASSRLS', r);
                ELSE
                    EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- roles are cluster-wide and the migration lock is per database: another
                -- database migrating at the same moment created it first
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

CREATE SCHEMA IF NOT EXISTS auth;

DO $$
BEGIN
    IF to_regprocedure('auth.uid()') IS NULL THEN
        -- Supabase's definition: PostgREST puts the verified JWT's claims in request.jwt.claims
        -- (older versions: one setting per claim, request.jwt.claim.sub)
        CREATE FUNCTION auth.uid() RETURNS uuid
        LANGUAGE sql STABLE AS $f$
            SELECT nullif(
                coalesce(
                    current_setting('request.jwt.claim.sub', true),
                    current_setting('request.jwt.claims', true)::jsonb ->> 'sub'
                ),
                ''
            )::uuid
        $f$;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, service_role;

-- The extensions the app's conventions name. The embedded server's build ships none of them, so
-- each is created where the server has it; nothing below depends on them (gen_random_uuid() is
-- built in since PostgreSQL 13), and the trigram index on product names is created only with
-- pg_trgm. On Supabase they go to its `extensions` schema.
DO $$
DECLARE
    ext text;
    target_schema text := CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'extensions')
                               THEN 'extensions' ELSE 'public' END;
BEGIN
    FOREACH ext IN ARRAY ARRAY['pgcrypto', 'uuid-ossp', 'pg_trgm', 'btree_gin'] LOOP
        IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = ext)
           AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = ext) THEN
            BEGIN
                EXECUTE format('CREATE EXTENSION IF NOT EXISTS %I WITH SCHEMA %I', ext, target_schema);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'extension % not created: not allowed for this role', ext;
            END;
        END IF;
    END LOOP;
END
$$;

-- == Tables ====================================================================================
-- UUID keys come from gen_random_uuid() (built in). User ids are Supabase auth user ids; there is
-- no foreign key to auth.users because plain PostgreSQL has no such table.

CREATE TABLE IF NOT EXISTS public.profiles (
    id            uuid        PRIMARY KEY,
    display_name  text        CHECK (length(display_name) <= 200),
    skin_type     text        CHECK (skin_type IN ('dry', 'oily', 'combination', 'normal', 'sensitive')),
    concerns      text[]      NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Time series, partitioned by month on created_at (UTC): partitions are named <table>_pYYYY_MM,
-- and every partitioned table also has a <table>_default partition (created below) so that an
-- insert never fails for want of a partition.
-- Analyses: one row per analysed image. area_scores maps an area (hydration, texture, ...) to a
-- 0-100 score; the recommender reads it. source_job_id + created_at let the analysing job write
-- idempotently: it sets created_at to its job's created_at and inserts ON CONFLICT DO NOTHING, so a
-- retried attempt finds its own row (a unique index on a partitioned table must hold the
-- partition key).
CREATE TABLE IF NOT EXISTS public.glow_analyses (
    id             uuid         NOT NULL DEFAULT gen_random_uuid(),
    user_id        uuid         NOT NULL,
    image_path     text         NOT NULL,
    overall_score  numeric(5,2) NOT NULL CHECK (overall_score BETWEEN 0 AND 100),
    area_scores    jsonb        NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(area_scores) = 'object'),
    advice         jsonb        NOT NULL DEFAULT '{}'::jsonb,
    model          text,
    source_job_id  bigint,
    created_at     timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE IF NOT EXISTS public.style_analyses (
    id                uuid         NOT NULL DEFAULT gen_random_uuid(),
    user_id           uuid         NOT NULL,
    image_path        text         NOT NULL,
    overall_score     numeric(5,2) NOT NULL CHECK (overall_score BETWEEN 0 AND 100),
    area_scores       jsonb        NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(area_scores) = 'object'),
    advice            jsonb        NOT NULL DEFAULT '{}'::jsonb,
    style_attributes  jsonb        NOT NULL DEFAULT '{}'::jsonb,
    model             text,
    source_job_id     bigint,
    created_at        timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

-- A user's uploads (the photos in the uploads bucket); process_upload fills `thumbnails`
-- ([{"size": 256, "bucket": ..., "path": ..., "width": ..., "height": ...}]).
CREATE TABLE IF NOT EXISTS public.progress_photos (
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id       uuid        NOT NULL,
    bucket        text        NOT NULL,
    storage_path  text        NOT NULL,
    content_type  text,
    size_bytes    bigint      CHECK (size_bytes >= 0),
    width         integer,
    height        integer,
    thumbnails    jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(thumbnails) = 'array'),
    processed_at  timestamptz,
    note          text        CHECK (length(note) <= 2000),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE IF NOT EXISTS public.api_metrics (
    id                uuid        NOT NULL DEFAULT gen_random_uuid(),
    endpoint          text        NOT NULL,
    method            text,
    status_code       integer     NOT NULL,
    response_time_ms  integer     NOT NULL CHECK (response_time_ms >= 0),
    user_id           uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

-- Indexes on the partitioned parents: every partition gets them.
CREATE INDEX IF NOT EXISTS idx_glow_analyses_user_created ON public.glow_analyses (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_glow_analyses_overall_score ON public.glow_analyses (overall_score);
CREATE INDEX IF NOT EXISTS idx_glow_analyses_area_scores ON public.glow_analyses USING gin (area_scores jsonb_path_ops);
CREATE UNIQUE INDEX IF NOT EXISTS idx_glow_analyses_source_job ON public.glow_analyses (source_job_id, created_at);
CREATE INDEX IF NOT EXISTS idx_style_analyses_user_created ON public.style_analyses (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_style_analyses_overall_score ON public.style_analyses (overall_score);
CREATE INDEX IF NOT EXISTS idx_style_analyses_area_scores ON public.style_analyses USING gin (area_scores jsonb_path_ops);
CREATE UNIQUE INDEX IF NOT EXISTS idx_style_analyses_source_job ON public.style_analyses (source_job_id, created_at);
CREATE INDEX IF NOT EXISTS idx_progress_photos_user_created ON public.progress_photos (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_api_metrics_user_created ON public.api_metrics (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_api_metrics_endpoint_created ON public.api_metrics (endpoint, created_at DESC);

-- The catalog. target_areas are the analysis areas a product improves (the recommender's match).
CREATE TABLE IF NOT EXISTS public.products (
    id            uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    sku           text          NOT NULL UNIQUE,
    name          text          NOT NULL,
    brand         text,
    category      text          NOT NULL,
    description   text,
    target_areas  text[]        NOT NULL DEFAULT '{}',
    skin_types    text[]        NOT NULL DEFAULT '{}',
    price_cents   integer       CHECK (price_cents >= 0),
    rating        numeric(2,1)  CHECK (rating BETWEEN 0 AND 5),
    active        boolean       NOT NULL DEFAULT true,
    created_at    timestamptz   NOT NULL DEFAULT now(),
    updated_at    timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_products_target_areas ON public.products USING gin (target_areas) WHERE active;
CREATE INDEX IF NOT EXISTS idx_products_category ON public.products (category) WHERE active;

DO $$
DECLARE
    trgm_schema text;
BEGIN
    SELECT n.nspname INTO trgm_schema
    FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format('CREATE INDEX IF NOT EXISTS idx_products_name_trgm ON public.products '
                       'USING gin (name %I.gin_trgm_ops)', trgm_schema);
    END IF;
END
$$;

-- One recommendation set per user and basis (the latest analyses it was computed from): the
-- recommender upserts the set for its basis, so running it twice writes the same rows.
CREATE TABLE IF NOT EXISTS public.product_recommendations (
    id            uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid          NOT NULL,
    product_id    uuid          NOT NULL REFERENCES public.products (id) ON DELETE CASCADE,
    basis         text          NOT NULL,
    rank          integer       NOT NULL CHECK (rank >= 1),
    score         numeric(8,2)  NOT NULL,
    reasons       jsonb         NOT NULL DEFAULT '[]'::jsonb,
    analysis_ids  uuid[]        NOT NULL DEFAULT '{}',
    source_job_id bigint,
    created_at    timestamptz   NOT NULL DEFAULT now(),
    updated_at    timestamptz   NOT NULL DEFAULT now(),
    UNIQUE (user_id, basis, product_id)
);
CREATE INDEX IF NOT EXISTS idx_product_recommendations_user_created
    ON public.product_recommendations (user_id, created_at DESC);

CREATE TABLE IF NOT EXISTS public.push_tokens (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid        NOT NULL,
    token           text        NOT NULL UNIQUE CHECK (length(token) <= 500),
    platform        text        CHECK (platform IN ('ios', 'android', 'web')),
    active          boolean     NOT NULL DEFAULT true,
    last_error      text,
    deactivated_at  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_push_tokens_user_active ON public.push_tokens (user_id) WHERE active;

-- One row per (sending job, token): what was sent, the Expo ticket, later the receipt. A retried
-- job inserts its rows ON CONFLICT DO NOTHING and sends only rows still 'pending'; it marks them
-- 'sending' in a committed statement before the HTTP call, so a crash mid-request leaves them
-- 'sending' (outcome unknown) instead of sending them a second time.
CREATE TABLE IF NOT EXISTS public.notifications (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id              bigint      NOT NULL,
    user_id             uuid        NOT NULL,
    push_token          text        NOT NULL,
    title               text,
    body                text,
    data                jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status              text        NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sending', 'sent', 'error', 'unknown')),
    ticket_id           text,
    error_code          text,
    error_message       text,
    sent_at             timestamptz,
    receipt_status      text        CHECK (receipt_status IN ('ok', 'error')),
    receipt_error_code  text,
    receipt_message     text,
    receipt_checked_at  timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, push_token)
);
CREATE INDEX IF NOT EXISTS idx_notifications_user_created ON public.notifications (user_id, created_at DESC);
-- the receipt checker's work list
CREATE INDEX IF NOT EXISTS idx_notifications_receipt_pending
    ON public.notifications (sent_at) WHERE status = 'sent' AND receipt_status IS NULL;

CREATE TABLE IF NOT EXISTS public.ai_response_cache (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cache_key          text        NOT NULL UNIQUE,
    user_id            uuid,
    kind               text,
    model              text,
    response           jsonb       NOT NULL,
    prompt_tokens      integer,
    completion_tokens  integer,
    hit_count          integer     NOT NULL DEFAULT 0,
    last_hit_at        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_ai_response_cache_expires ON public.ai_response_cache (expires_at);

-- Fixed one-minute windows per (user, endpoint); check_rate_limit counts in them.
CREATE TABLE IF NOT EXISTS public.api_rate_limits (
    user_id        uuid        NOT NULL,
    endpoint       text        NOT NULL,
    window_start   timestamptz NOT NULL,
    request_count  integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (user_id, endpoint, window_start)
);
CREATE INDEX IF NOT EXISTS idx_api_rate_limits_window ON public.api_rate_limits (window_start);

-- The buckets users upload to (JOBRUNNER_APP_UPLOADS_BUCKET; add a row when it is not
-- `user-uploads`): a progress_photos row may only name one of them (progress_photos_own below).
CREATE TABLE IF NOT EXISTS public.user_upload_buckets (
    bucket text PRIMARY KEY CHECK (bucket ~ '^[a-z0-9][a-z0-9._-]{0,62}$')
);
INSERT INTO public.user_upload_buckets (bucket) VALUES ('user-uploads') ON CONFLICT DO NOTHING;

-- Per-user statistics, refreshed by refresh_user_statistics_cache.
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

-- == Row security ==============================================================================
-- Users (`authenticated`, identified by auth.uid()) see only their own rows and change only what
-- the app lets them; analyses and recommendations are written by the worker role alone.
-- `service_role` bypasses row security (Supabase's admin key). `anon` gets the active catalog and
-- nothing else.
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
ALTER TABLE public.user_upload_buckets ENABLE ROW LEVEL SECURITY;

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

-- push tokens: the user's own, which they add and remove (uploads: progress_photos_own, below)
DROP POLICY IF EXISTS push_tokens_own ON public.push_tokens;
CREATE POLICY push_tokens_own ON public.push_tokens FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));

DROP POLICY IF EXISTS products_read_active ON public.products;
CREATE POLICY products_read_active ON public.products FOR SELECT TO anon, authenticated USING (active);

-- the upload policy reads the bucket list as the user
DROP POLICY IF EXISTS user_upload_buckets_read ON public.user_upload_buckets;
CREATE POLICY user_upload_buckets_read ON public.user_upload_buckets FOR SELECT
    TO authenticated, jobrunner_worker USING (true);

-- the worker: everything, on every app table
DROP POLICY IF EXISTS profiles_worker_all ON public.profiles;
CREATE POLICY profiles_worker_all ON public.profiles
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS glow_analyses_worker_all ON public.glow_analyses;
CREATE POLICY glow_analyses_worker_all ON public.glow_analyses
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS style_analyses_worker_all ON public.style_analyses;
CREATE POLICY style_analyses_worker_all ON public.style_analyses
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS progress_photos_worker_all ON public.progress_photos;
CREATE POLICY progress_photos_worker_all ON public.progress_photos
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS api_metrics_worker_all ON public.api_metrics;
CREATE POLICY api_metrics_worker_all ON public.api_metrics
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS products_worker_all ON public.products;
CREATE POLICY products_worker_all ON public.products
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS product_recommendations_worker_all ON public.product_recommendations;
CREATE POLICY product_recommendations_worker_all ON public.product_recommendations
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS push_tokens_worker_all ON public.push_tokens;
CREATE POLICY push_tokens_worker_all ON public.push_tokens
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS notifications_worker_all ON public.notifications;
CREATE POLICY notifications_worker_all ON public.notifications
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS ai_response_cache_worker_all ON public.ai_response_cache;
CREATE POLICY ai_response_cache_worker_all ON public.ai_response_cache
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS api_rate_limits_worker_all ON public.api_rate_limits;
CREATE POLICY api_rate_limits_worker_all ON public.api_rate_limits
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);

-- == Privileges ================================================================================
-- Start from nothing (Supabase grants anon/authenticated everything in public by default), then
-- grant what each role needs; the policies narrow it to rows.
REVOKE ALL ON public.profiles, public.glow_analyses, public.style_analyses, public.progress_photos,
    public.api_metrics, public.products, public.product_recommendations, public.push_tokens,
    public.notifications, public.ai_response_cache, public.api_rate_limits, public.user_statistics_cache,
    public.user_upload_buckets
    FROM PUBLIC, anon, authenticated;

GRANT SELECT, INSERT, UPDATE ON public.profiles TO authenticated;
GRANT SELECT ON public.glow_analyses, public.style_analyses, public.product_recommendations,
    public.notifications TO authenticated;
-- A progress_photos row names Storage objects, which the worker reads with the service key and
-- cleanup_old_data keeps while a row names them: users insert only the columns that describe
-- their upload (created_at, thumbnails and the processing results are the server's and the
-- worker's) and update only the note.
GRANT SELECT, DELETE ON public.progress_photos TO authenticated;
GRANT INSERT (user_id, bucket, storage_path, content_type, size_bytes, note), UPDATE (note)
    ON public.progress_photos TO authenticated;
GRANT SELECT, INSERT, UPDATE (active, platform, updated_at), DELETE ON public.push_tokens TO authenticated;
GRANT SELECT ON public.products TO anon, authenticated;
GRANT SELECT ON public.user_upload_buckets TO authenticated;

GRANT SELECT, INSERT, UPDATE, DELETE ON public.profiles, public.glow_analyses, public.style_analyses,
    public.progress_photos, public.api_metrics, public.products, public.product_recommendations,
    public.push_tokens, public.notifications, public.ai_response_cache, public.api_rate_limits
    TO jobrunner_worker, service_role;
GRANT SELECT ON public.user_statistics_cache, public.user_upload_buckets TO jobrunner_worker, service_role;

-- Sequences: on Supabase, default privileges give anon/authenticated USAGE, SELECT and UPDATE on
-- every new sequence in public, and `setval('ai_response_cache_id_seq', 9223372036854775807)`
-- would make every later insert fail. Revoke them on every sequence owned by an app table
-- (identity and serial columns alike). Identity columns need no privilege on their sequence to
-- insert; the worker and the admin role keep USAGE for serial columns.
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

-- == What needs functions ======================================================================
-- The functions the statements below call are created at this line, from their files (with
-- the files those require); the other function files are applied after the migrations.
-- jobrunner:functions is_storage_path_of protect_partition create_upcoming_partitions

-- uploads: the user's own rows, pointing into their own folder (`<auth.uid()>/...`) of a bucket
-- users upload to; cleanup_old_data deletes only objects whose paths pass the same rules
DROP POLICY IF EXISTS progress_photos_own ON public.progress_photos;
CREATE POLICY progress_photos_own ON public.progress_photos FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid()))
    WITH CHECK (
        user_id = (SELECT auth.uid())
        AND public.is_storage_path_of(user_id, storage_path)
        AND EXISTS (SELECT 1 FROM public.user_upload_buckets AS b WHERE b.bucket = progress_photos.bucket)
    );

-- The partitions: a default one per partitioned table, and months ahead.
CREATE TABLE IF NOT EXISTS public.glow_analyses_default PARTITION OF public.glow_analyses DEFAULT;
CREATE TABLE IF NOT EXISTS public.style_analyses_default PARTITION OF public.style_analyses DEFAULT;
CREATE TABLE IF NOT EXISTS public.progress_photos_default PARTITION OF public.progress_photos DEFAULT;
CREATE TABLE IF NOT EXISTS public.api_metrics_default PARTITION OF public.api_metrics DEFAULT;
SELECT public.protect_partition(p)
FROM unnest(ARRAY['public.glow_analyses_default', 'public.style_analyses_default',
                  'public.progress_photos_default', 'public.api_metrics_default']::regclass[]) AS p;

-- this month and the next three; the daily maintain_partitions job keeps creating them ahead
SELECT public.create_upcoming_partitions(4);

-- == Unused uploads (cleanup_old_data) =========================================================
-- What cleanup_old_data needs to tell unused uploads from used ones (docs/app/maintenance.md).

-- A profile's avatar: an object path or a Storage URL. cleanup_old_data counts it as a reference,
-- so an upload a user chose as avatar is never unused; it is only ever read to keep objects.
ALTER TABLE public.profiles ADD COLUMN IF NOT EXISTS avatar_url text CHECK (length(avatar_url) <= 2048);

-- Where cleanup_old_data's sweep of each bucket stopped: the last user folder it finished ('' when
-- a sweep went round). A run lists a bounded number of folders; the next goes on from there.
CREATE TABLE IF NOT EXISTS public.storage_sweep_positions (
    bucket        text        PRIMARY KEY,
    after_folder  text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.storage_sweep_positions ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS storage_sweep_positions_worker_all ON public.storage_sweep_positions;
CREATE POLICY storage_sweep_positions_worker_all ON public.storage_sweep_positions
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
REVOKE ALL ON public.storage_sweep_positions FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.storage_sweep_positions TO jobrunner_worker, service_role;

-- == What the Edge Functions call with the service key =========================================
-- PostgREST runs a request made with the service key as `service_role`, NOINHERIT on Supabase (and
-- as created above): it holds only what is granted to it by name, never what its memberships hold
-- (the core makes it a member of jobrunner_worker and jobrunner_enqueuer, which lets it SET ROLE
-- to them, nothing more). The Edge Functions enqueue jobs, so the enqueue functions (jobrunner's,
-- in its schema; SECURITY DEFINER, they insert pending jobs and nothing else) are granted to it.
-- The app's own functions grant it what it calls in their files. Re-applying the core's function
-- files keeps these grants (CREATE OR REPLACE keeps privileges; the files revoke only from
-- PUBLIC, anon and authenticated).
GRANT USAGE ON SCHEMA {schema} TO service_role;
GRANT EXECUTE ON FUNCTION {schema}.enqueue_job(text, jsonb, text, integer, timestamptz, integer, text, text),
    {schema}.enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], text[], text[])
    TO service_role;

-- == Supabase Storage: the app's buckets and their policies ===================================
-- user-uploads (5 MiB, images only), analyses, avatars (users read and write under their own
-- `<user id>/` folder only) and the plugin's archive, created where Supabase's `storage` schema
-- exists; plain PostgreSQL has no Storage and gets nothing here (setup_app_storage.sql says why,
-- and how to run it again).
-- jobrunner:functions setup_app_storage
SELECT public.setup_app_storage();

-- == Rate limits per endpoint class ============================================================
-- The backend document's defaults, one row per class of endpoint: analysis 100, general 200,
-- uploads 20 requests a minute per user. check_rate_limit takes the class and reads its limit
-- here; change a limit with an UPDATE (as the owner), it applies from the next call on. 0 turns
-- a class off (every call refused).
CREATE TABLE IF NOT EXISTS public.api_rate_limit_classes (
    endpoint_class  text        PRIMARY KEY CHECK (endpoint_class ~ '^[a-z][a-z0-9_]{0,39}$'),
    max_per_minute  integer     NOT NULL CHECK (max_per_minute BETWEEN 0 AND 1000000),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.api_rate_limit_classes (endpoint_class, max_per_minute)
VALUES ('analysis', 100), ('general', 200), ('uploads', 20)
ON CONFLICT (endpoint_class) DO NOTHING;

-- api_rate_limits.endpoint holds the class; request_count counts every call of the window,
-- refused_count those over the limit (the ones check_rate_limit answered false).
ALTER TABLE public.api_rate_limits ADD COLUMN IF NOT EXISTS refused_count integer NOT NULL DEFAULT 0;

ALTER TABLE public.api_rate_limit_classes ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS api_rate_limit_classes_worker_read ON public.api_rate_limit_classes;
CREATE POLICY api_rate_limit_classes_worker_read ON public.api_rate_limit_classes
    FOR SELECT TO jobrunner_worker USING (true);
REVOKE ALL ON public.api_rate_limit_classes FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.api_rate_limit_classes TO jobrunner_worker, service_role;

-- == Users' last activity ======================================================================
-- profiles.last_active_at: when the user was last seen, written by the server only
-- (record_user_activity, batched, for the service key; touch_my_last_active for the user
-- themselves), so users insert and update every other column of their profile but this one.
ALTER TABLE public.profiles ADD COLUMN IF NOT EXISTS last_active_at timestamptz;
-- active users over a window count a range of it
CREATE INDEX IF NOT EXISTS idx_profiles_last_active ON public.profiles (last_active_at);
REVOKE INSERT, UPDATE ON public.profiles FROM authenticated;
GRANT INSERT (id, display_name, skin_type, concerns, avatar_url, created_at, updated_at),
    UPDATE (display_name, skin_type, concerns, avatar_url, updated_at) ON public.profiles TO authenticated;

-- == API request metrics =======================================================================
-- The app's API layer records its requests in batches with record_api_requests (service key).
-- error_kind: why a failed request failed, as the API classifies it ('database': the database
-- could not be reached or refused a connection, e.g. PostgREST's PGRST000-PGRST003; 'timeout';
-- 'upstream': OpenAI, Expo or Storage; 'internal': anything else); NULL when it did not fail.
ALTER TABLE public.api_metrics ADD COLUMN IF NOT EXISTS error_kind text
    CHECK (error_kind IN ('database', 'timeout', 'upstream', 'internal'));
-- the monitoring functions read the last minutes of every endpoint
CREATE INDEX IF NOT EXISTS idx_api_metrics_created ON public.api_metrics (created_at);

-- The endpoints the daemon's metrics label by name (api_endpoint_stats): the first 50 that
-- record_api_requests sees, or rows an operator adds; the others are summed as `__other__`, so
-- the number of series stays bounded whatever the API records. Delete a row to free its place.
CREATE TABLE IF NOT EXISTS public.api_metric_endpoints (
    endpoint    text        PRIMARY KEY CHECK (endpoint ~ '^[A-Za-z0-9_./:-]{1,100}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.api_metric_endpoints ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS api_metric_endpoints_worker_all ON public.api_metric_endpoints;
CREATE POLICY api_metric_endpoints_worker_all ON public.api_metric_endpoints
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
REVOKE ALL ON public.api_metric_endpoints FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT ON public.api_metric_endpoints TO jobrunner_worker, service_role;
