-- The app's Supabase Storage: its buckets, and who may read and write objects in them. The
-- Storage API runs each request as the caller's role with the JWT's claims set, so these row
-- security policies on storage.objects decide what a user's key may do; the service key
-- (service_role, the worker's Storage client) bypasses them. The Storage API itself enforces a
-- bucket's file_size_limit and allowed_mime_types on upload.
--
--   user-uploads  users' photos: at most 5 MiB, images only; the worker's thumbnails go next to
--                 them (WebP)
--   analyses      per-user analysis files
--   avatars       per-user profile pictures
--   archive       the plugin's own (not in the backend document): analysis partitions archived
--                 by cleanup_old_data; no policy, so the service key alone reaches it
--
-- In the three user buckets a user (`authenticated`) reads, writes, replaces and deletes objects
-- under their own folder `<auth.uid()>/` only (Supabase's `storage.foldername(name)`); what they
-- write must also be a clean path inside it (public.is_storage_path_of: no `.`/`..`/empty segment,
-- no backslash, `%` or control character, at most 1024 characters), the rule the app's tables and
-- cleanup apply to the paths they hold. `anon` gets nothing. The bucket names are the plugin's
-- settings' defaults (jobrunner_handlers/buckets.py; a test holds them equal).
--
-- Where there is no Storage schema (plain PostgreSQL, the embedded server) there is nothing to set
-- up: it returns an empty list. The migration calls it once; call it again after Storage's own
-- schema appears (a self-hosted Storage installed later), or to restore the limits and policies.
-- Existing buckets of these names get these limits. Returns the buckets it set up.
-- requires: is_storage_path_of

CREATE OR REPLACE FUNCTION public.setup_app_storage() RETURNS text[]
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    user_buckets constant text[] := ARRAY['user-uploads', 'analyses', 'avatars'];
BEGIN
    IF to_regclass('storage.buckets') IS NULL OR to_regclass('storage.objects') IS NULL
       OR to_regprocedure('storage.foldername(text)') IS NULL THEN
        RAISE NOTICE 'no Supabase Storage schema in this database: the app''s buckets are not set up';
        RETURN ARRAY[]::text[];
    END IF;

    INSERT INTO storage.buckets AS b (id, name, public, file_size_limit, allowed_mime_types)
    VALUES ('user-uploads', 'user-uploads', false, 5242880,
            ARRAY['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/heic', 'image/heif']),
           ('analyses', 'analyses', false, NULL, NULL),
           ('avatars', 'avatars', false, NULL, NULL),
           ('archive', 'archive', false, NULL, ARRAY['application/gzip'])
    ON CONFLICT (id) DO UPDATE
    SET public = excluded.public, file_size_limit = excluded.file_size_limit,
        allowed_mime_types = excluded.allowed_mime_types;

    -- Supabase turns row security on for storage.objects, and no longer lets its `postgres` role
    -- alter Storage's tables (creating policies on them is allowed): say so where it is off
    IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = 'storage.objects'::regclass) THEN
        RAISE WARNING 'row security is off on storage.objects: the app''s Storage policies below take effect '
                      'only once it is on (ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY, as its owner)';
    END IF;

    DROP POLICY IF EXISTS app_users_read_own_files ON storage.objects;
    CREATE POLICY app_users_read_own_files ON storage.objects FOR SELECT TO authenticated
        USING (bucket_id IN ('user-uploads', 'analyses', 'avatars')
               AND (storage.foldername(name))[1] = (SELECT auth.uid()::text));

    DROP POLICY IF EXISTS app_users_add_own_files ON storage.objects;
    CREATE POLICY app_users_add_own_files ON storage.objects FOR INSERT TO authenticated
        WITH CHECK (bucket_id IN ('user-uploads', 'analyses', 'avatars')
                    AND (storage.foldername(name))[1] = (SELECT auth.uid()::text)
                    AND public.is_storage_path_of((SELECT auth.uid()), name));

    -- an upload with x-upsert replaces the object in place
    DROP POLICY IF EXISTS app_users_replace_own_files ON storage.objects;
    CREATE POLICY app_users_replace_own_files ON storage.objects FOR UPDATE TO authenticated
        USING (bucket_id IN ('user-uploads', 'analyses', 'avatars')
               AND (storage.foldername(name))[1] = (SELECT auth.uid()::text))
        WITH CHECK (bucket_id IN ('user-uploads', 'analyses', 'avatars')
                    AND (storage.foldername(name))[1] = (SELECT auth.uid()::text)
                    AND public.is_storage_path_of((SELECT auth.uid()), name));

    DROP POLICY IF EXISTS app_users_delete_own_files ON storage.objects;
    CREATE POLICY app_users_delete_own_files ON storage.objects FOR DELETE TO authenticated
        USING (bucket_id IN ('user-uploads', 'analyses', 'avatars')
               AND (storage.foldername(name))[1] = (SELECT auth.uid()::text));

    RETURN user_buckets || 'archive'::text;
END
$$;

-- the migrating owner's (it creates policies): no API role, not even the service key
REVOKE ALL ON FUNCTION public.setup_app_storage() FROM PUBLIC, anon, authenticated, service_role;
