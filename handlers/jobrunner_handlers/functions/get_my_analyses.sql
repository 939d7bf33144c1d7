-- The caller's analyses, newest first, a page at a time (the backend document's getPaginatedData
-- for analyses): `p_kind` 'glow', 'style' or NULL for both; `p_limit` 1 to 100 rows; the next
-- page starts after the last row's (created_at, id), passed as p_before_created_at and
-- p_before_id (both NULL for the first page). Keyset paging: a page costs the same however deep
-- it is, and rows added meanwhile neither repeat nor shift the next page (OFFSET paging does
-- both). Walks idx_glow_analyses_user_created / idx_style_analyses_user_created.
--
-- Runs as the caller (SECURITY INVOKER): row security shows a user their own rows only, and
-- auth.uid() picks them. `image_path` is what the document calls image_url: the image's object
-- path in the user-uploads bucket, or the Storage URL the analysis was asked for with; get a URL
-- to show with Storage's createSignedUrl (docs/app/backend.md).
-- requires: require_request_user

CREATE OR REPLACE FUNCTION public.get_my_analyses(
    p_kind              text        DEFAULT NULL,
    p_before_created_at timestamptz DEFAULT NULL,
    p_before_id         uuid        DEFAULT NULL,
    p_limit             integer     DEFAULT 20
) RETURNS TABLE (kind text, id uuid, image_path text, overall_score numeric, area_scores jsonb,
                 advice jsonb, style_attributes jsonb, model text, created_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    me uuid := public.require_request_user();
BEGIN
    IF p_kind IS NOT NULL AND p_kind NOT IN ('glow', 'style') THEN
        RAISE EXCEPTION 'get_my_analyses: p_kind is glow, style or NULL (both)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'get_my_analyses: p_limit is 1 to 100' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (p_before_created_at IS NULL) <> (p_before_id IS NULL) THEN
        RAISE EXCEPTION 'get_my_analyses: the cursor is p_before_created_at and p_before_id together'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT a.kind, a.id, a.image_path, a.overall_score, a.area_scores, a.advice, a.style_attributes, a.model,
           a.created_at
    FROM (
        (SELECT 'glow'::text AS kind, g.id, g.image_path, g.overall_score::numeric AS overall_score, g.area_scores,
                g.advice, '{}'::jsonb AS style_attributes, g.model, g.created_at
         FROM public.glow_analyses AS g
         WHERE p_kind IS DISTINCT FROM 'style' AND g.user_id = me
           AND (p_before_created_at IS NULL
                OR (g.created_at <= p_before_created_at AND (g.created_at, g.id) < (p_before_created_at, p_before_id)))
         ORDER BY g.created_at DESC, g.id DESC
         LIMIT p_limit)
        UNION ALL
        (SELECT 'style'::text, s.id, s.image_path, s.overall_score::numeric, s.area_scores, s.advice,
                s.style_attributes, s.model, s.created_at
         FROM public.style_analyses AS s
         WHERE p_kind IS DISTINCT FROM 'glow' AND s.user_id = me
           AND (p_before_created_at IS NULL
                OR (s.created_at <= p_before_created_at AND (s.created_at, s.id) < (p_before_created_at, p_before_id)))
         ORDER BY s.created_at DESC, s.id DESC
         LIMIT p_limit)
    ) AS a
    ORDER BY a.created_at DESC, a.id DESC
    LIMIT p_limit;
END
$$;

-- users only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.get_my_analyses(text, timestamptz, uuid, integer) FROM PUBLIC, anon, service_role;
GRANT EXECUTE ON FUNCTION public.get_my_analyses(text, timestamptz, uuid, integer) TO authenticated;
