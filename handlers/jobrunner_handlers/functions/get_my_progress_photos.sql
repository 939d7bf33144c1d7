-- The caller's progress photos, newest first, a page at a time (getPaginatedData for photos):
-- `p_limit` 1 to 100 rows; the next page starts after the last row's (created_at, id), passed as
-- p_before_created_at and p_before_id (both NULL for the first page). Keyset paging, as
-- get_my_analyses; walks idx_progress_photos_user_created. Runs as the caller: row security and
-- auth.uid() give a user their own photos only. `bucket` and `storage_path` name the original,
-- `thumbnails` the sizes process_upload made ([{"size", "bucket", "path", "width", "height"}]).
-- requires: require_request_user

CREATE OR REPLACE FUNCTION public.get_my_progress_photos(
    p_before_created_at timestamptz DEFAULT NULL,
    p_before_id         uuid        DEFAULT NULL,
    p_limit             integer     DEFAULT 20
) RETURNS TABLE (id uuid, bucket text, storage_path text, content_type text, size_bytes bigint, width integer,
                 height integer, thumbnails jsonb, note text, processed_at timestamptz, created_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    me uuid := public.require_request_user();
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'get_my_progress_photos: p_limit is 1 to 100' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (p_before_created_at IS NULL) <> (p_before_id IS NULL) THEN
        RAISE EXCEPTION 'get_my_progress_photos: the cursor is p_before_created_at and p_before_id together'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT p.id, p.bucket, p.storage_path, p.content_type, p.size_bytes, p.width, p.height, p.thumbnails, p.note,
           p.processed_at, p.created_at
    FROM public.progress_photos AS p
    WHERE p.user_id = me
      AND (p_before_created_at IS NULL
           OR (p.created_at <= p_before_created_at AND (p.created_at, p.id) < (p_before_created_at, p_before_id)))
    ORDER BY p.created_at DESC, p.id DESC
    LIMIT p_limit;
END
$$;

-- users only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.get_my_progress_photos(timestamptz, uuid, integer) FROM PUBLIC, anon, service_role;
GRANT EXECUTE ON FUNCTION public.get_my_progress_photos(timestamptz, uuid, integer) TO authenticated;
