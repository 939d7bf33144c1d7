-- What Supabase provides and plain PostgreSQL (tests, the embedded server) lacks: the roles
-- `anon`, `authenticated`, `service_role`, the schema `auth` and `auth.uid()`. Each is created
-- only where it is missing, so the same file runs unchanged on Supabase, where all of them exist.
--
-- The app's tables live in `public` (the schema PostgREST exposes to the mobile app). `{schema}`
-- is jobrunner's own schema (where background_jobs lives); these files use it only where the app
-- schema reaches into the queue (see prune_finished_background_jobs in 0004).

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
