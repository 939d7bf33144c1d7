-- The app's tables. UUID keys come from gen_random_uuid() (built in). User ids are Supabase auth
-- user ids; there is no foreign key to auth.users because plain PostgreSQL has no such table.

CREATE TABLE IF NOT EXISTS public.profiles (
    id            uuid        PRIMARY KEY,
    display_name  text        CHECK (length(display_name) <= 200),
    skin_type     text        CHECK (skin_type IN ('dry', 'oily', 'combination', 'normal', 'sensitive')),
    concerns      text[]      NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

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
-- cleanup walks uploads by age
CREATE INDEX IF NOT EXISTS idx_progress_photos_created ON public.progress_photos (created_at);
CREATE INDEX IF NOT EXISTS idx_api_metrics_user_created ON public.api_metrics (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_api_metrics_endpoint_created ON public.api_metrics (endpoint, created_at DESC);

CREATE TABLE IF NOT EXISTS public.glow_analyses_default PARTITION OF public.glow_analyses DEFAULT;
CREATE TABLE IF NOT EXISTS public.style_analyses_default PARTITION OF public.style_analyses DEFAULT;
CREATE TABLE IF NOT EXISTS public.progress_photos_default PARTITION OF public.progress_photos DEFAULT;
CREATE TABLE IF NOT EXISTS public.api_metrics_default PARTITION OF public.api_metrics DEFAULT;
SELECT public.protect_partition(p)
FROM unnest(ARRAY['public.glow_analyses_default', 'public.style_analyses_default',
                  'public.progress_photos_default', 'public.api_metrics_default']::regclass[]) AS p;

-- this month and the next two; cleanup_old_data keeps creating them ahead
SELECT public.create_upcoming_partitions(3);

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
