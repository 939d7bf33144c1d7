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

-- name: try_job_lock
-- Held by a maintenance job (cleanup_old_data, archive_old_analyses: $1) for its whole run, on a
-- connection of its own: one run of each at a time.
SELECT pg_try_advisory_lock(hashtext('jobrunner_app:' || $1::text));

-- name: job_unlock
SELECT pg_advisory_unlock(hashtext('jobrunner_app:' || $1::text));

-- name: storage_references_of_user
-- Everything a user's rows name in Storage, as stored (object paths or Storage URLs): their
-- uploads and the uploads' thumbnails, the images their analyses were made from, their avatar.
-- Walks the user_id indexes of each table.
SELECT p.storage_path AS ref FROM public.progress_photos AS p WHERE p.user_id = $1
UNION ALL
SELECT t.value ->> 'path'
FROM public.progress_photos AS p CROSS JOIN LATERAL jsonb_array_elements(p.thumbnails) AS t(value)
WHERE p.user_id = $1 AND jsonb_typeof(t.value) = 'object'
UNION ALL
SELECT g.image_path FROM public.glow_analyses AS g WHERE g.user_id = $1
UNION ALL
SELECT s.image_path FROM public.style_analyses AS s WHERE s.user_id = $1
UNION ALL
SELECT f.avatar_url FROM public.profiles AS f WHERE f.id = $1 AND f.avatar_url IS NOT NULL;

-- name: sweep_position
SELECT after_folder FROM public.storage_sweep_positions WHERE bucket = $1;

-- name: save_sweep_position
INSERT INTO public.storage_sweep_positions AS s (bucket, after_folder) VALUES ($1, $2)
ON CONFLICT (bucket) DO UPDATE SET after_folder = excluded.after_folder, updated_at = now();

-- name: cleanup_expired_cache
SELECT public.cleanup_expired_cache($1::int);

-- name: cleanup_old_metrics
SELECT public.cleanup_old_metrics(make_interval(days => $1::int), $2::int)::text;

-- name: partitions_due
-- What maintain_partitions creates, as of $2 (NULL: now).
SELECT parent::text AS parent, month, default_rows
FROM public.partitions_due($1::int, coalesce($2::timestamptz, now()));

-- name: create_month_partition
-- One partition per call, each in its own transaction: its locks end with it.
SELECT partition_name, moved_rows FROM public.create_month_partition($1::regclass, $2::date, $3::bigint);

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

-- name: ai_cache_hit
-- A live cached reply for this key, counted as a hit (the cache_key unique index finds it).
UPDATE public.ai_response_cache
SET hit_count = hit_count + 1, last_hit_at = now()
WHERE cache_key = $1 AND expires_at > now()
RETURNING response::text AS response, model;

-- name: ai_cache_store
-- An expired entry the purge has not removed yet is replaced, not kept beside the new one.
INSERT INTO public.ai_response_cache
    (cache_key, user_id, kind, model, response, prompt_tokens, completion_tokens, expires_at)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, now() + make_interval(secs => $8::float8))
ON CONFLICT (cache_key) DO UPDATE
SET user_id = excluded.user_id, kind = excluded.kind, model = excluded.model, response = excluded.response,
    prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
    created_at = now(), expires_at = excluded.expires_at, hit_count = 0, last_hit_at = NULL;

-- name: insert_glow_analysis
-- created_at is the job's created_at: a retried attempt conflicts on (source_job_id, created_at)
-- and writes nothing (no row comes back), so it does not enqueue a second follow-up either.
INSERT INTO public.glow_analyses
    (user_id, image_path, overall_score, area_scores, advice, model, source_job_id, created_at)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8)
ON CONFLICT (source_job_id, created_at) DO NOTHING
RETURNING id;

-- name: insert_style_analysis
INSERT INTO public.style_analyses
    (user_id, image_path, overall_score, area_scores, advice, style_attributes, model, source_job_id, created_at)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $9::jsonb, $6, $7, $8)
ON CONFLICT (source_job_id, created_at) DO NOTHING
RETURNING id;

-- name: glow_analysis_of_job
SELECT id FROM public.glow_analyses WHERE source_job_id = $1 AND created_at = $2;

-- name: style_analysis_of_job
SELECT id FROM public.style_analyses WHERE source_job_id = $1 AND created_at = $2;

-- name: record_notifications
-- What this job sends: one row per active token of its users, written before anything is sent.
-- A retried attempt keeps the rows it finds (and their status); tokens registered since are added.
INSERT INTO public.notifications (job_id, user_id, push_token, title, body, data)
SELECT $1, t.user_id, t.token, $3, $4, $5::jsonb
FROM public.push_tokens AS t
WHERE t.user_id = ANY($2::uuid[]) AND t.active
ON CONFLICT (job_id, push_token) DO NOTHING;

-- name: mark_interrupted_unknown
-- Rows an earlier attempt marked 'sending' and never settled (it died, or lost the answer): Expo
-- may have delivered them, so they become 'unknown' and are not sent again (at most once).
UPDATE public.notifications
SET status = 'unknown', error_message = 'the attempt that sent it ended before Expo answered'
WHERE job_id = $1 AND status = 'sending';

-- name: claim_notification_batch
-- The next batch, marked 'sending' and committed (this statement on its own) before the request
-- goes out. Walks the (job_id, push_token) unique index.
UPDATE public.notifications AS n
SET status = 'sending'
FROM (
    SELECT id FROM public.notifications
    WHERE job_id = $1 AND status = 'pending'
    ORDER BY push_token
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) AS batch
WHERE n.id = batch.id
RETURNING n.id, n.push_token;

-- name: settle_notifications
-- Each row of a batch after Expo answered: its ticket, or its error. 'unknown' rows may still be
-- settled (a late answer of an attempt thought dead is the truth).
UPDATE public.notifications AS n
SET status = t.status, ticket_id = t.ticket_id, error_code = t.error_code, error_message = t.error_message,
    sent_at = CASE WHEN t.status = 'sent' THEN now() ELSE n.sent_at END
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
     AS t(id, status, ticket_id, error_code, error_message)
WHERE n.id = t.id AND n.status IN ('sending', 'unknown');

-- name: release_notifications
-- Expo refused the whole request (429, 5xx, not connected): nothing was sent, the retry sends them.
UPDATE public.notifications SET status = 'pending' WHERE id = ANY($1::uuid[]) AND status = 'sending';

-- name: deactivate_push_tokens
UPDATE public.push_tokens
SET active = false, last_error = $2, deactivated_at = now(), updated_at = now()
WHERE token = ANY($1::text[]) AND active;

-- name: notification_counts
SELECT status, count(*)::int AS n, count(ticket_id)::int AS tickets
FROM public.notifications WHERE job_id = $1 GROUP BY status;

-- name: unchecked_receipts
-- Tickets of one sending job whose receipt has not been read yet.
SELECT ticket_id, push_token
FROM public.notifications
WHERE job_id = $1 AND status = 'sent' AND ticket_id IS NOT NULL AND receipt_status IS NULL
ORDER BY ticket_id;

-- name: record_receipts
UPDATE public.notifications AS n
SET receipt_status = r.status, receipt_error_code = r.error_code, receipt_message = r.message,
    receipt_checked_at = now()
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS r(ticket_id, status, error_code, message)
WHERE n.job_id = $1 AND n.ticket_id = r.ticket_id AND n.status = 'sent';

-- name: api_endpoint_sample
-- The app sampler's view of the last $1 seconds per endpoint label (a bounded set, see
-- functions/api_endpoint_stats.sql); $2: the response time in ms above which a request is slow.
SELECT endpoint, requests, responses_1xx, responses_2xx, responses_3xx, responses_4xx, responses_5xx,
       rate_limited, database_errors, slow, p95_ms
FROM public.api_endpoint_stats(make_interval(secs => $1::float8), $2::int, true);

-- name: api_rate_limit_sample
-- Rate-limited calls per endpoint class over the last $1 seconds; `known`: a class of
-- api_rate_limit_classes (the others are labelled __other__).
SELECT r.endpoint_class, r.requests, r.refused, r.users_refused, c.endpoint_class IS NOT NULL AS known
FROM public.api_rate_limit_refusals(make_interval(secs => $1::float8)) AS r
LEFT JOIN public.api_rate_limit_classes AS c ON c.endpoint_class = r.endpoint_class
ORDER BY r.endpoint_class;

-- name: api_active_users_sample
SELECT public.api_active_users(interval '5 minutes') AS last_5m, public.api_active_users(interval '1 hour') AS last_1h,
       public.api_active_users(interval '24 hours') AS last_24h;

-- name: database_connections
-- Connections to every database of the server, and how many ordinary roles may open (what is
-- left once the superusers' reserve is set aside). pg_stat_database is readable by every role.
SELECT (SELECT coalesce(sum(numbackends), 0) FROM pg_stat_database)::integer AS connections,
       current_setting('max_connections')::integer
           - current_setting('superuser_reserved_connections')::integer AS connection_limit;
