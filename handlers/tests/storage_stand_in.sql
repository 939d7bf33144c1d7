-- A stand-in for Supabase Storage's schema, for the tests of the app's bucket policies: what
-- Storage's own migrations create that the policies touch (the `storage` schema, its `buckets`
-- and `objects` tables with row security on, `storage.foldername`, the API roles' privileges),
-- written after supabase/storage's migrations/tenant/. Every object is created only where it is
-- missing, as the app's migration does for `auth`, so a database with the real schema is left as
-- it is. Like Storage's migrations it creates the API roles where they are missing (roles are
-- cluster-wide: another database may be creating them at the same moment).

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT%s', r,
                               CASE WHEN r = 'service_role' THEN ' BYPASSRLS' ELSE '' END);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

CREATE SCHEMA IF NOT EXISTS storage;

CREATE TABLE IF NOT EXISTS storage.buckets (
    id                  text        PRIMARY KEY,
    name                text        NOT NULL UNIQUE,
    owner               uuid,
    owner_id            text,
    public              boolean     DEFAULT false,
    avif_autodetection  boolean     DEFAULT false,
    file_size_limit     bigint,
    allowed_mime_types  text[],
    created_at          timestamptz DEFAULT now(),
    updated_at          timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS storage.objects (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket_id         text        REFERENCES storage.buckets (id),
    name              text,
    owner             uuid,
    owner_id          text,
    metadata          jsonb,
    path_tokens       text[]      GENERATED ALWAYS AS (string_to_array(name, '/')) STORED,
    version           text,
    created_at        timestamptz DEFAULT now(),
    updated_at        timestamptz DEFAULT now(),
    last_accessed_at  timestamptz DEFAULT now(),
    UNIQUE (bucket_id, name)
);

ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF to_regprocedure('storage.foldername(text)') IS NULL THEN
        -- Storage's definition: the path's folders, the file name left out
        CREATE FUNCTION storage.foldername(name text) RETURNS text[]
        LANGUAGE plpgsql AS $f$
        DECLARE
            _parts text[];
        BEGIN
            SELECT string_to_array(name, '/') INTO _parts;
            RETURN _parts[1:array_length(_parts, 1) - 1];
        END
        $f$;
    END IF;
END
$$;

-- as Storage's migrations grant them: everything, row security decides
GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role;
GRANT ALL ON storage.buckets, storage.objects TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION storage.foldername(text) TO anon, authenticated, service_role;
