-- true: `path` is an object path inside `owner`'s folder: `<owner>/` then non-empty segments,
-- none of them `.` or `..`, no backslash, no percent sign (nothing that decodes into one of
-- those), no control character. progress_photos_own's WITH CHECK calls it as the user.

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
GRANT EXECUTE ON FUNCTION public.is_storage_path_of(uuid, text) TO authenticated, jobrunner_worker, service_role;
