-- Job flows (migration 0004_flows.sql, sql/functions/enqueue_dependent_job.sql): enqueueing a
-- dependent, and what a dependent and `jobrunner status --job` read of a flow. Each starts with a
-- `-- name: NAME` line, like jobs.sql.

-- name: enqueue_dependent
SELECT {schema}.enqueue_dependent_job($1::bigint[], $2::text, $3::jsonb, $4::text, $5::integer,
                                      $6::timestamptz, $7::integer, $8::text, $9::text);

-- name: parent_jobs
-- A dependent's parents, by id, as they are now: what its handler reads their results from. A
-- parent pruned since (finished longer ago than JOBRUNNER_RETENTION_SECONDS) is missing.
SELECT p.id, p.job_type, p.status, p.result::text AS result, p.last_error
FROM {schema}.background_jobs AS j
CROSS JOIN LATERAL unnest(j.depends_on) AS d(id)
JOIN {schema}.background_jobs AS p ON p.id = d.id
WHERE j.id = $1
ORDER BY p.id;

-- name: flow_parent_counts
-- How a job's parents stand, per status (`jobrunner status --job`): a fan-in of thousands is
-- shown as counts, with the first ids of each status.
SELECT p.status, count(*) AS jobs, (array_agg(p.id ORDER BY p.id))[1:10] AS first_ids
FROM {schema}.background_jobs AS j
CROSS JOIN LATERAL unnest(j.depends_on) AS d(id)
JOIN {schema}.background_jobs AS p ON p.id = d.id
WHERE j.id = $1
GROUP BY p.status
ORDER BY p.status;

-- name: flow_waiting_dependents
-- The jobs waiting for this one to finish (the dependency rows live until it does), first $2.
SELECT d.job_id AS id, j.job_type, j.status
FROM {schema}.jobrunner_job_dependencies AS d
JOIN {schema}.background_jobs AS j ON j.id = d.job_id
WHERE d.parent_id = $1
ORDER BY d.job_id
LIMIT $2;
