-- A progress_photos row names Storage objects that cleanup_old_data deletes with the service key
-- once the row is old enough. So a user may only write rows that point into their own folder
-- (`<auth.uid()>/...`) of a bucket users upload to, and only the columns that describe their
-- upload: created_at (when cleanup deletes), thumbnails and the processing results are set by
-- the server and the worker. cleanup_old_data checks the same again before it deletes anything.

-- The buckets users upload to (JOBRUNNER_APP_UPLOADS_BUCKET; add a row when it is not `uploads`).
CREATE TABLE IF NOT EXISTS public.user_upload_buckets (
    bucket text PRIMARY KEY CHECK (bucket ~ '^[a-z0-9][a-z0-9._-]{0,62}$')
);
INSERT INTO public.user_upload_buckets (bucket) VALUES ('uploads') ON CONFLICT DO NOTHING;
ALTER TABLE public.user_upload_buckets ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.user_upload_buckets FROM PUBLIC, anon, authenticated;
-- the policy below reads it as the user
GRANT SELECT ON public.user_upload_buckets TO authenticated, jobrunner_worker, service_role;
DROP POLICY IF EXISTS user_upload_buckets_read ON public.user_upload_buckets;
CREATE POLICY user_upload_buckets_read ON public.user_upload_buckets FOR SELECT
    TO authenticated, jobrunner_worker USING (true);

-- true: `path` is an object path inside `owner`'s folder: `<owner>/` then non-empty segments,
-- none of them `.` or `..`, no backslash, no percent sign (nothing that decodes into one of
-- those), no control character.
CREATE OR REPLACE FUNCTION public.is_storage_path_of(owner uuid, path text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        length(path) <= 1024
        AND starts_with(path, owner::text || '/')
        AND path !~ '(^|/)\.{0,2}(/|$)'
        AND path !~ '[\\%[:cntrl:]]',
        false)
$$;
REVOKE ALL ON FUNCTION public.is_storage_path_of(uuid, text) FROM PUBLIC, anon, authenticated;
-- the policy below calls it as the user
GRANT EXECUTE ON FUNCTION public.is_storage_path_of(uuid, text) TO authenticated, jobrunner_worker, service_role;

ALTER POLICY progress_photos_own ON public.progress_photos
    USING (user_id = (SELECT auth.uid()))
    WITH CHECK (
        user_id = (SELECT auth.uid())
        AND public.is_storage_path_of(user_id, storage_path)
        AND EXISTS (SELECT 1 FROM public.user_upload_buckets AS b WHERE b.bucket = progress_photos.bucket)
    );

-- Column privileges: INSERT of what describes the upload (the rest takes its default), UPDATE of
-- the note alone. REVOKE on the table also removes the column privileges granted before.
REVOKE INSERT, UPDATE ON public.progress_photos FROM authenticated;
GRANT INSERT (user_id, bucket, storage_path, content_type, size_bytes, note) ON public.progress_photos TO authenticated;
GRANT UPDATE (note) ON public.progress_photos TO authenticated;
