-- Every statement the app's handlers run. Each starts with a `-- name: NAME` line;
-- jobrunner_handlers.queries loads them by name. App tables live in `public`.

-- name: user_lock
-- One recommender (or upload processor) per key at a time; ends with the transaction.
SELECT pg_advisory_xact_lock(hashtext('jobrunner_app:' || $1::text));

-- name: latest_analyses
-- The newest glow and the newest style analysis of a user (walks idx_*_user_created).
(SELECT 'glow' AS kind, id, area_scores::text AS area_scores, created_at
 FROM public.glow_analyses WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT 1)
UNION ALL
(SELECT 'style' AS kind, id, area_scores::text AS area_scores, created_at
 FROM public.style_analyses WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT 1);

-- name: profile_skin_type
SELECT skin_type FROM public.profiles WHERE id = $1;

-- name: recommendation_candidates
-- Active products targeting any of the weak areas $2, except those recommended to the user in the
-- last $4 days from another basis (a re-run for the same basis $3 must see the same candidates).
SELECT p.id, p.sku, p.name, p.target_areas, p.skin_types, p.rating::float8 AS rating
FROM public.products AS p
WHERE p.active AND p.target_areas && $2::text[]
  AND NOT EXISTS (
      SELECT 1 FROM public.product_recommendations AS r
      WHERE r.user_id = $1 AND r.product_id = p.id AND r.basis <> $3
        AND r.created_at > now() - make_interval(days => $4::int)
  );

-- name: upsert_recommendations
-- The set for (user $1, basis $2), in one statement; unchanged rows are not rewritten.
INSERT INTO public.product_recommendations AS r
    (user_id, basis, product_id, rank, score, reasons, analysis_ids, source_job_id)
SELECT $1, $2, t.product_id, t.rank, t.score, t.reasons, $7::uuid[], $8
FROM unnest($3::uuid[], $4::int[], $5::numeric[], $6::jsonb[]) AS t(product_id, rank, score, reasons)
ON CONFLICT (user_id, basis, product_id) DO UPDATE
SET rank = excluded.rank, score = excluded.score, reasons = excluded.reasons, updated_at = now()
WHERE (r.rank, r.score, r.reasons) IS DISTINCT FROM (excluded.rank, excluded.score, excluded.reasons);

-- name: delete_stale_recommendations
-- Products of this basis's set that the new ranking no longer includes.
DELETE FROM public.product_recommendations
WHERE user_id = $1 AND basis = $2 AND product_id <> ALL($3::uuid[]);

-- name: try_cleanup_lock
-- Held by cleanup_old_data for its whole run on its own connection: one cleanup at a time.
SELECT pg_try_advisory_lock(hashtext('jobrunner_app:cleanup_old_data'));

-- name: cleanup_unlock
SELECT pg_advisory_unlock(hashtext('jobrunner_app:cleanup_old_data'));

-- name: old_uploads
-- The oldest uploads past the retention (walks idx_progress_photos_created).
SELECT id, created_at, bucket, storage_path, thumbnails::text AS thumbnails
FROM public.progress_photos
WHERE created_at < now() - make_interval(days => $1::int)
ORDER BY created_at, id
LIMIT $2;

-- name: delete_uploads
DELETE FROM public.progress_photos AS p
USING unnest($1::uuid[], $2::timestamptz[]) AS d(id, created_at)
WHERE p.id = d.id AND p.created_at = d.created_at;

-- name: cleanup_expired_cache
SELECT public.cleanup_expired_cache($1::int);

-- name: cleanup_old_metrics
SELECT public.cleanup_old_metrics(make_interval(days => $1::int), $2::int)::text;

-- name: create_upcoming_partitions
SELECT public.create_upcoming_partitions($1::int);

-- name: prune_finished_jobs
SELECT public.prune_finished_background_jobs(make_interval(secs => $1::float8), $2::int);

-- name: archivable_partitions
-- Analysis month partitions that ended more than $1 days ago, oldest first.
SELECT parent::text AS parent, m.partition::text AS partition, m.range_start, m.range_end
FROM unnest(ARRAY['public.glow_analyses', 'public.style_analyses']::regclass[]) AS parent
CROSS JOIN LATERAL public.month_partitions(parent) AS m
WHERE m.range_end <= now() - make_interval(days => $1::int)
ORDER BY m.range_start, parent;

-- name: partition_rows_page
SELECT created_at, id, row_json::text AS row_json
FROM public.partition_rows_page($1::regclass, $2::timestamptz, $3::uuid, $4::int);

-- name: drop_month_partition
SELECT public.drop_month_partition($1::regclass, $2::regclass);

-- name: refresh_user_statistics
SELECT public.refresh_user_statistics_cache();

-- name: user_statistics_rows
SELECT count(*) FROM public.user_statistics_cache;

-- name: update_upload_record
-- process_upload's record of an upload it has thumbnailed; a retry rewrites the same values.
UPDATE public.progress_photos
SET content_type = $4, size_bytes = $5, width = $6, height = $7, thumbnails = $8::jsonb, processed_at = now()
WHERE user_id = $1 AND bucket = $2 AND storage_path = $3
RETURNING id;

-- name: insert_upload_record
INSERT INTO public.progress_photos
    (user_id, bucket, storage_path, content_type, size_bytes, width, height, thumbnails, processed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, now())
RETURNING id;
