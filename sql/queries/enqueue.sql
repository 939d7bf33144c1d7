-- Enqueueing from Python (jobrunner.client). Each starts with a `-- name: NAME` line, like
-- jobs.sql.

-- name: enqueue_batch
-- Bulk enqueue (sql/functions/enqueue_jobs.sql), the ids inserted as one array in the order of
-- the jobs: a driver unpacks one value, not a row per job. A column array left NULL holds its
-- column's default for every job.
SELECT array_agg(r.id ORDER BY r.n)
FROM {schema}.enqueue_jobs($1::text[], $2::jsonb[], $3::text[], $4::int[], $5::timestamptz[],
                           $6::int[], $7::text[], $8::text[]) WITH ORDINALITY AS r(id, n);
