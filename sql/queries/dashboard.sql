-- The web dashboard's statements (jobrunner.dashboard.store). Each reads through an index that
-- bounds its cost however much history the table holds: no OFFSET, no count of the whole table.
-- The dashboard's connections plan every statement with its parameters (plan_cache_mode =
-- force_custom_plan), so a filter left empty (NULL) drops out of the plan and a status filter
-- can use the partial index that holds exactly those rows.

-- name: dashboard_queue_live
-- Per queue: pending jobs (runnable now, and the oldest runnable's age) through
-- background_jobs_claim_idx, running jobs through background_jobs_lease_idx, blocked jobs (job
-- flows: waiting for their parents) through the live edges of jobrunner_job_dependencies: every
-- blocked job has one to each unfinished parent, and the table holds only those, so the count
-- costs what is waiting, not the history (blocked jobs are outside the claim indexes). Each
-- waiting job is looked up by its id (a subquery in the select list, which the planner keeps as
-- a per-row primary-key probe, once per job: OFFSET 0 keeps the subquery from being merged into
-- the outer one, which would probe again for the filter): as a join, the planner preferred a
-- scan of the whole table.
SELECT coalesce(p.queue, r.queue, b.queue) AS queue, coalesce(p.pending, 0) AS pending,
       coalesce(p.runnable, 0) AS runnable, p.oldest_runnable_seconds, coalesce(r.running, 0) AS running,
       coalesce(b.blocked, 0) AS blocked
FROM (
    SELECT queue, count(*) AS pending,
           count(*) FILTER (WHERE scheduled_at <= now()) AS runnable,
           extract(epoch FROM now() - least(greatest(min(scheduled_at) FILTER (WHERE scheduled_at <= now()),
                                                     '1970-01-01+00'::timestamptz), now()))::float8
               AS oldest_runnable_seconds
    FROM {schema}.background_jobs
    WHERE status = 'pending'
    GROUP BY queue
) AS p
FULL JOIN (
    SELECT queue, count(*) AS running FROM {schema}.background_jobs WHERE status = 'running' GROUP BY queue
) AS r ON r.queue = p.queue
FULL JOIN (
    SELECT w.queue, count(*) AS blocked
    FROM (SELECT (SELECT j.queue FROM {schema}.background_jobs AS j
                  WHERE j.id = e.job_id AND j.status = 'blocked') AS queue
          FROM (SELECT DISTINCT d.job_id FROM {schema}.jobrunner_job_dependencies AS d) AS e
          OFFSET 0) AS w
    WHERE w.queue IS NOT NULL
    GROUP BY w.queue
) AS b ON b.queue = coalesce(p.queue, r.queue)
ORDER BY 1;

-- name: dashboard_type_live
-- Per job type: pending (runnable now, oldest runnable's age) through
-- background_jobs_type_claim_idx, running through background_jobs_lease_idx, blocked as above.
SELECT coalesce(p.job_type, r.job_type, b.job_type) AS job_type, coalesce(p.pending, 0) AS pending,
       coalesce(p.runnable, 0) AS runnable, p.oldest_runnable_seconds, coalesce(r.running, 0) AS running,
       coalesce(b.blocked, 0) AS blocked
FROM (
    SELECT job_type, count(*) AS pending,
           count(*) FILTER (WHERE scheduled_at <= now()) AS runnable,
           extract(epoch FROM now() - least(greatest(min(scheduled_at) FILTER (WHERE scheduled_at <= now()),
                                                     '1970-01-01+00'::timestamptz), now()))::float8
               AS oldest_runnable_seconds
    FROM {schema}.background_jobs
    WHERE status = 'pending'
    GROUP BY job_type
) AS p
FULL JOIN (
    SELECT job_type, count(*) AS running FROM {schema}.background_jobs WHERE status = 'running' GROUP BY job_type
) AS r ON r.job_type = p.job_type
FULL JOIN (
    SELECT w.job_type, count(*) AS blocked
    FROM (SELECT (SELECT j.job_type FROM {schema}.background_jobs AS j
                  WHERE j.id = e.job_id AND j.status = 'blocked') AS job_type
          FROM (SELECT DISTINCT d.job_id FROM {schema}.jobrunner_job_dependencies AS d) AS e
          OFFSET 0) AS w
    WHERE w.job_type IS NOT NULL
    GROUP BY w.job_type
) AS b ON b.job_type = coalesce(p.job_type, r.job_type)
ORDER BY 1;

-- name: dashboard_finished_since
-- Jobs that finished in the last $1 seconds, by queue, job type and status, through
-- background_jobs_finished_idx: what throughput and failure rate are computed from (within the
-- retention: older jobs are pruned).
SELECT queue, job_type, status, count(*) AS jobs
FROM {schema}.background_jobs
WHERE finished_at >= now() - make_interval(secs => $1::float8)
GROUP BY queue, job_type, status;

-- name: dashboard_limits
-- Job types with limit state: their bucket and any pause for upstream back-pressure, and the
-- limited queues' buckets.
SELECT 'type' AS kind, job_type AS name, tokens, refilled_at,
       CASE WHEN paused_until > now() THEN paused_until END AS paused_until,
       CASE WHEN paused_until > now() THEN pause_reason END AS pause_reason
FROM {schema}.jobrunner_limit_state
UNION ALL
SELECT 'queue', queue, tokens, refilled_at, NULL, NULL
FROM {schema}.jobrunner_queue_limit_state
ORDER BY 1 DESC, 2;

-- name: dashboard_workers
-- The replicas holding jobs (the running set, through background_jobs_lease_idx), and the
-- leader leases replicas renew while they live.
SELECT 'jobs' AS kind, worker_id AS name, count(*) AS jobs, max(lease_expires_at) AS expires_at,
       bool_or(lease_expires_at > now()) AS live
FROM {schema}.background_jobs
WHERE status = 'running'
GROUP BY worker_id
UNION ALL
SELECT 'leader', name || ': ' || holder, NULL, expires_at, expires_at > now()
FROM {schema}.jobrunner_leaders
ORDER BY 1 DESC, 2;

-- name: dashboard_change_marker
-- What changes when anything a dashboard page shows changes, in a few index probes: the
-- newest job, the latest finish, the running set, the latest operator action, the pauses.
-- Polled while a page is open; a NOTIFY of new jobs makes it look sooner.
SELECT concat_ws(':',
    (SELECT max(id) FROM {schema}.background_jobs),
    (SELECT max(finished_at) FROM {schema}.background_jobs WHERE finished_at IS NOT NULL),
    (SELECT count(*) || '/' || coalesce(sum(hashtext(id::text || ':' || attempts::text)::bigint), 0)
     FROM {schema}.background_jobs WHERE status = 'running'),
    (SELECT max(id) FROM {schema}.jobrunner_audit),
    (SELECT string_agg(queue, ',' ORDER BY queue) FROM {schema}.jobrunner_queue_pauses),
    (SELECT count(*) FROM {schema}.jobrunner_limit_state WHERE paused_until > now()));

-- name: dashboard_id_bounds
SELECT (SELECT min(id) FROM {schema}.background_jobs) AS lowest,
       (SELECT max(id) FROM {schema}.background_jobs) AS highest;

-- name: dashboard_first_id_created_at
-- The lowest id of the jobs created at or after $1, found by a binary search over the primary
-- key (some 40 probes, however large the table): ids are drawn as jobs are inserted, so they
-- grow with created_at (a job of a transaction that began earlier may stand a little out of
-- order: the caller leaves a margin). The job list starts a page filtered by creation time
-- there instead of walking down to it. NULL: no job was created at or after $1.
-- The search keeps [lo, hi) still to look at and `found`, the lowest id known to be created at
-- or after $1: every job below lo was created before $1, and no job lies in [hi, found).
WITH RECURSIVE search(lo, hi, found, steps) AS (
    SELECT (SELECT min(id) FROM {schema}.background_jobs), bounds.highest + 1, bounds.highest + 1, 0
    FROM (SELECT max(id) AS highest FROM {schema}.background_jobs) AS bounds
    UNION ALL
    SELECT CASE WHEN probe.id IS NOT NULL AND probe.created_at < $1::timestamptz THEN probe.id + 1 ELSE s.lo END,
           CASE WHEN probe.id IS NULL THEN (s.lo + s.hi) / 2
                WHEN probe.created_at < $1::timestamptz THEN s.hi
                ELSE probe.id END,
           CASE WHEN probe.id IS NOT NULL AND probe.created_at >= $1::timestamptz THEN probe.id ELSE s.found END,
           s.steps + 1
    FROM search AS s
    LEFT JOIN LATERAL (
        SELECT b.id, b.created_at FROM {schema}.background_jobs AS b
        WHERE b.id >= (s.lo + s.hi) / 2 AND b.id < s.hi
        ORDER BY b.id
        LIMIT 1
    ) AS probe ON true
    WHERE s.lo < s.hi AND s.steps < 128
)
SELECT CASE WHEN found > (SELECT max(id) FROM {schema}.background_jobs) THEN NULL ELSE found END
FROM search
ORDER BY steps DESC
LIMIT 1;

-- name: dashboard_jobs_page
-- One page of the job list, newest first: ids below $1 (the page's cursor) and at or above $2
-- (the lowest id the page may look at: a filter no index serves reads at most the ids between,
-- and the page offers to look further). The filter, $3..$11, NULL meaning "any": statuses,
-- job type, queue, least and greatest priority, created at or after / before, a dedupe or
-- concurrency key, a LIKE pattern for the last error (wildcards in the operator's text
-- escaped). $12: how many rows. The same filter as dashboard_count_matching and
-- dashboard_pick_matching.
SELECT id, job_type, queue, status, priority, attempts, max_attempts, created_at, scheduled_at, started_at,
       finished_at, worker_id, left(last_error, 300) AS last_error, dedupe_key, concurrency_key,
       cancel_requested_at
FROM {schema}.background_jobs
WHERE id < $1::bigint AND id >= $2::bigint
  AND ($3::text[] IS NULL OR status = ANY($3::text[]))
  AND ($4::text IS NULL OR job_type = $4::text)
  AND ($5::text IS NULL OR queue = $5::text)
  AND ($6::integer IS NULL OR priority >= $6::integer)
  AND ($7::integer IS NULL OR priority <= $7::integer)
  AND ($8::timestamptz IS NULL OR created_at >= $8::timestamptz)
  AND ($9::timestamptz IS NULL OR created_at < $9::timestamptz)
  AND ($10::text IS NULL OR dedupe_key = $10::text OR concurrency_key = $10::text)
  AND ($11::text IS NULL OR last_error ILIKE $11::text)
ORDER BY id DESC
LIMIT $12::integer;

-- name: dashboard_count_matching
-- How many jobs up to id $1 match the filter $3..$11 (as in dashboard_jobs_page) and are in
-- one of the statuses $2 the action applies to: the count a bulk action's confirmation shows.
SELECT count(*)
FROM {schema}.background_jobs
WHERE id <= $1::bigint
  AND status = ANY($2::text[])
  AND ($3::text[] IS NULL OR status = ANY($3::text[]))
  AND ($4::text IS NULL OR job_type = $4::text)
  AND ($5::text IS NULL OR queue = $5::text)
  AND ($6::integer IS NULL OR priority >= $6::integer)
  AND ($7::integer IS NULL OR priority <= $7::integer)
  AND ($8::timestamptz IS NULL OR created_at >= $8::timestamptz)
  AND ($9::timestamptz IS NULL OR created_at < $9::timestamptz)
  AND ($10::text IS NULL OR dedupe_key = $10::text OR concurrency_key = $10::text)
  AND ($11::text IS NULL OR last_error ILIKE $11::text);

-- name: dashboard_pick_matching
-- One batch of a bulk action: up to $12 jobs at or below id $1, newest first, matching the
-- filter $3..$11 (as in dashboard_jobs_page) in the statuses $2 the action applies to, locked
-- for this transaction. SKIP LOCKED: a job a daemon is claiming right now is not waited for
-- (the action counts it as not changed); the next batch starts below the lowest id returned.
SELECT id
FROM {schema}.background_jobs
WHERE id <= $1::bigint
  AND status = ANY($2::text[])
  AND ($3::text[] IS NULL OR status = ANY($3::text[]))
  AND ($4::text IS NULL OR job_type = $4::text)
  AND ($5::text IS NULL OR queue = $5::text)
  AND ($6::integer IS NULL OR priority >= $6::integer)
  AND ($7::integer IS NULL OR priority <= $7::integer)
  AND ($8::timestamptz IS NULL OR created_at >= $8::timestamptz)
  AND ($9::timestamptz IS NULL OR created_at < $9::timestamptz)
  AND ($10::text IS NULL OR dedupe_key = $10::text OR concurrency_key = $10::text)
  AND ($11::text IS NULL OR last_error ILIKE $11::text)
ORDER BY id DESC
LIMIT $12::integer
FOR UPDATE SKIP LOCKED;

-- name: dashboard_retry_jobs
-- Retry: a failed, dead or cancelled job gets a fresh set of attempts, runnable now (as
-- retry_job). Returns the jobs changed and their queues (to wake their daemons).
UPDATE {schema}.background_jobs
SET status = 'pending', attempts = 0, scheduled_at = now(), finished_at = NULL, cancel_requested_at = NULL,
    progress = NULL
WHERE id = ANY($1::bigint[]) AND status IN ('failed', 'dead', 'cancelled')
RETURNING id, queue;

-- name: dashboard_cancel_jobs
-- Cancel: pending jobs end cancelled, running ones are asked to stop (cancel_job, one by one in
-- id order, as the outcome writes lock them). Returns each job's status after the request.
SELECT j.id, {schema}.cancel_job(j.id) AS status
FROM unnest($1::bigint[]) AS j(id)
ORDER BY j.id;

-- name: dashboard_delete_jobs
-- Delete: finished, pending and blocked jobs; a running job is cancelled first, never deleted
-- under its worker.
DELETE FROM {schema}.background_jobs
WHERE id = ANY($1::bigint[]) AND status IN ('pending', 'blocked', 'completed', 'failed', 'dead', 'cancelled')
RETURNING id, queue;

-- name: dashboard_run_jobs_now
-- Run now: pending jobs scheduled for later (delayed, or waiting for a retry) become runnable.
UPDATE {schema}.background_jobs
SET scheduled_at = now()
WHERE id = ANY($1::bigint[]) AND status = 'pending' AND scheduled_at > now()
RETURNING id, queue;

-- name: dashboard_set_priority
-- Change priority: of pending jobs (a running job's priority no longer matters).
UPDATE {schema}.background_jobs
SET priority = $2::integer
WHERE id = ANY($1::bigint[]) AND status = 'pending' AND priority <> $2::integer
RETURNING id, queue;

-- name: dashboard_schedules
-- Every cron schedule with its last job's outcome, and the database's clock (one row with a
-- NULL name when there is no schedule).
SELECT clock.db_now, s.name, s.definition::text AS definition, s.last_tick, s.last_fired_at, s.last_job_id,
       j.status AS last_job_status, j.finished_at AS last_job_finished_at
FROM (SELECT now() AS db_now) AS clock
LEFT JOIN {schema}.jobrunner_schedules AS s ON true
LEFT JOIN {schema}.background_jobs AS j ON j.id = s.last_job_id
ORDER BY s.name;

-- name: dashboard_schedule
SELECT name, definition::text AS definition FROM {schema}.jobrunner_schedules WHERE name = $1::text;

-- name: dashboard_audit_page
-- The audit trail, newest first, ids below $1.
SELECT id, at, actor, via, action, target::text AS target, requested, affected, finished_at, detail
FROM {schema}.jobrunner_audit
WHERE id < $1::bigint
ORDER BY id DESC
LIMIT $2::integer;

-- name: dashboard_audit_entry
SELECT id, at, actor, via, action, target::text AS target, requested, affected, finished_at, detail
FROM {schema}.jobrunner_audit
WHERE id = $1::bigint;

-- name: dashboard_schema_ready
-- Whether the schema has what the dashboard reads (migration 0003 and earlier).
SELECT to_regclass('{schema}.jobrunner_queue_pauses') IS NOT NULL
   AND to_regclass('{schema}.background_jobs') IS NOT NULL;
