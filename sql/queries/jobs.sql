-- Every statement jobrunner runs against the queue. Each starts with a `-- name: NAME` line;
-- jobrunner.sql_files loads them by name and replaces `{schema}` with the configured schema.
-- The claim returns its columns in the order of Job's fields: Job.from_claim_row builds the
-- job positionally (tests/test_claim_rows.py).

-- name: claim
-- The daemon's claim (sql/functions/claim_jobs.sql): the unlimited part and every limited part
-- in one call. The arguments are the function's, in its order.
SELECT id, job_type, queue, payload, priority, attempts, max_attempts, created_at, scheduled_at, dedupe_key,
       waited_seconds, limited
FROM {schema}.claim_jobs($1::text, $2::float8, $3::integer, $4::bigint, $5::text[], $6::integer, $7::boolean,
                         $8::text[], $9::integer[], $10::integer[], $11::integer[], $12::float8[], $13::integer[],
                         $14::text[], $15::integer[], $16::integer[], $17::float8[]);

-- name: ensure_limit_state
-- At a daemon's start: the state rows of its globally limited job types ($1, their rates $2)
-- and limited queues ($3, rates $4), each bucket full, in one statement and in name order, so
-- that the claims find them (claim_part creates one only when it was deleted since).
WITH types AS (
    INSERT INTO {schema}.jobrunner_limit_state (job_type, tokens)
    SELECT t.job_type, coalesce(t.rate, 0) FROM unnest($1::text[], $2::integer[]) AS t(job_type, rate)
    ORDER BY t.job_type
    ON CONFLICT (job_type) DO NOTHING
)
INSERT INTO {schema}.jobrunner_queue_limit_state (queue, tokens)
SELECT q.queue, coalesce(q.rate, 0) FROM unnest($3::text[], $4::integer[]) AS q(queue, rate)
ORDER BY q.queue
ON CONFLICT (queue) DO NOTHING;

-- name: record_outcomes
-- Write many outcomes in one statement (sql/functions/record_outcomes.sql): plain completions
-- as two arrays ($1, $2), every other outcome in $3..$10. Returns the ids written; the others
-- had lost their lease.
SELECT id FROM {schema}.record_outcomes($1::bigint[], $2::int[], $3::bigint[], $4::int[], $5::text[], $6::float8[],
                                        $7::text[], $8::text[], $9::jsonb[], $10::bool[]) AS id;

-- name: pause_job_type
-- A handler's upstream said "slow down": no replica claims this type until the pause ends.
INSERT INTO {schema}.jobrunner_limit_state AS l (job_type, paused_until, pause_reason)
VALUES ($1, now() + make_interval(secs => $2::float8), $3)
ON CONFLICT (job_type) DO UPDATE
SET paused_until = greatest(coalesce(l.paused_until, now()), EXCLUDED.paused_until),
    pause_reason = EXCLUDED.pause_reason;

-- name: seconds_until_runnable
-- Burst mode's exit test: seconds until the next pending job of these queues may run (0: one
-- may run now, e.g. held back by a global limit; NULL: nothing pending at all). A paused
-- queue's jobs do not count: no claim takes them until it is resumed.
-- (greatest() would turn the NULL of an empty min() into 0)
SELECT CASE WHEN min(scheduled_at) IS NULL THEN NULL
            ELSE greatest(0, extract(epoch FROM least(greatest(min(scheduled_at), '1970-01-01+00'::timestamptz), '9999-12-31+00'::timestamptz) - now())) END::float8
FROM {schema}.background_jobs
WHERE status = 'pending' AND queue = ANY($1::text[])
  AND queue NOT IN (SELECT p.queue FROM {schema}.jobrunner_queue_pauses AS p);

-- name: notify_queues
-- Wake idle daemons after jobs were handed back.
SELECT pg_notify('jobrunner_{schema_name}', q) FROM unnest($1::text[]) AS q;

-- name: extend_leases
-- Heartbeat: push the lease of every job this worker runs. Returns the jobs it still holds;
-- any other was rescued or cancelled meanwhile and its handler must stop. Like the outcome
-- writes (record_outcomes), this and the next two statements find the worker's jobs by id:
-- the status test is a CASE, from which the planner cannot prove the predicate of
-- background_jobs_lease_idx, so it never walks every running job of every replica instead
-- (41 ms for a 100-job heartbeat with 5,000 other jobs running, against 0.8 ms by id).
-- Rows are locked in ascending id order, as record_outcomes locks them (the ids it is given
-- are sorted), so that a heartbeat and an outcome write cannot deadlock.
WITH mine AS (
    SELECT j.id
    FROM unnest($1::bigint[], $2::int[]) AS h(id, attempt)
    JOIN {schema}.background_jobs AS j
      ON j.id = h.id AND j.attempts = h.attempt AND CASE j.status WHEN 'running' THEN true ELSE false END
    ORDER BY j.id
    FOR NO KEY UPDATE OF j
)
UPDATE {schema}.background_jobs AS j
SET lease_expires_at = now() + make_interval(secs => $3::float8)
WHERE j.id = ANY(ARRAY(SELECT id FROM mine))
RETURNING j.id;

-- name: rescue_expired_leases
-- Jobs whose worker died: back to pending (the attempt it used counts), or dead when it was
-- the last. Walks background_jobs_lease_idx; SKIP LOCKED so replicas can run it together.
-- A rescued job keeps its scheduled_at, as a released one does (record_outcomes): it goes back
-- to its place in the queue, not behind the backlog, so the wait after a worker's death is
-- bounded by the lease and the rescue interval. A job that kills every worker that runs it
-- comes back first each time, one slot of one claim, until max_attempts makes it dead.
WITH expired AS (
    SELECT id
    FROM {schema}.background_jobs
    -- a running row without a lease (written by hand) counts as expired too
    WHERE status = 'running' AND (lease_expires_at < now() OR lease_expires_at IS NULL)
    ORDER BY lease_expires_at NULLS FIRST
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.background_jobs AS j
SET status = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                  WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'pending' END,
    finished_at = CASE WHEN j.cancel_requested_at IS NOT NULL OR j.attempts >= j.max_attempts
                       THEN now() ELSE NULL END,
    last_error = format('lease expired: worker %s stopped heartbeating during attempt %s',
                        coalesce(j.worker_id, '?'), j.attempts),
    last_error_traceback = NULL,
    lease_expires_at = NULL
FROM expired
WHERE j.id = expired.id
RETURNING j.id, j.job_type, j.queue, j.status, j.attempts, j.worker_id;

-- name: prune_finished
-- Delete finished jobs older than the retention, a bounded batch at a time. The ids go in as an
-- array so the DELETE finds them through the primary key: joined to a CTE, the planner hashed
-- the batch and scanned the whole table for every batch (200-550 ms each in bench/soak.py).
DELETE FROM {schema}.background_jobs
WHERE id = ANY(ARRAY(
    SELECT id
    FROM {schema}.background_jobs
    WHERE finished_at < now() - make_interval(secs => $1::float8)
      AND status IN ('completed', 'failed', 'dead', 'cancelled')
    ORDER BY finished_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
));

-- name: try_maintenance_lock
-- One replica at a time does a given piece of maintenance; the lock ends with the transaction.
SELECT pg_try_advisory_xact_lock(hashtext('jobrunner:{schema_name}:' || $1::text));

-- name: enqueue
SELECT {schema}.enqueue_job($1::text, $2::jsonb, $3::text, $4::integer, $5::timestamptz,
                            $6::integer, $7::text, $8::text);

-- name: enqueue_many
-- Bulk enqueue from parallel arrays in one statement (sql/functions/enqueue_jobs.sql).
SELECT id FROM {schema}.enqueue_jobs($1::text[], $2::jsonb[], $3::text[], $4::int[], $5::timestamptz[],
                                     $6::int[], $7::text[], $8::text[]) AS id;

-- name: get_job
SELECT id, job_type, queue, payload::text AS payload, priority, status, attempts, max_attempts,
       scheduled_at, dedupe_key, created_at, started_at, finished_at, lease_expires_at, worker_id,
       last_error, last_error_traceback, result::text AS result, release_count,
       cancel_requested_at, progress::text AS progress, concurrency_key,
       depends_on, waiting_on, parents_failed, on_parent_failure, snoozes
FROM {schema}.background_jobs
WHERE id = $1;

-- name: cancel_job
-- Status after the request: cancelled, cancelling (running: its worker is told), or as it was.
SELECT {schema}.cancel_job($1::bigint);

-- name: cancel_job_reporting
-- cancel_job for `jobrunner cancel`, with what the job was before the call, so that a job that had
-- already ended (cancelled included) is told apart from one this call cancelled. The row is
-- locked before cancel_job runs, so no other writer changes it in between. No row: no such job.
SELECT was.status AS status_before, was.cancel_requested_at AS cancel_requested_before, was.finished_at,
       {schema}.cancel_job($1::bigint) AS status_after
FROM (SELECT j.status, j.cancel_requested_at, j.finished_at
      FROM {schema}.background_jobs AS j
      WHERE j.id = $1::bigint
      FOR UPDATE) AS was;

-- name: cancel_requested
-- The polling fallback for cancellation: which of the jobs we hold were asked to stop.
SELECT id FROM {schema}.background_jobs
WHERE id = ANY($1::bigint[]) AND CASE status WHEN 'running' THEN true ELSE false END
  AND cancel_requested_at IS NOT NULL;

-- name: set_progress
UPDATE {schema}.background_jobs
SET progress = $3::jsonb
WHERE id = $1 AND attempts = $2 AND CASE status WHEN 'running' THEN true ELSE false END;

-- name: snoozes
-- How often a running job snoozed before (asked when its handler snoozes again, to hold it to
-- its max_snoozes); NULL when the attempt is no longer ours.
SELECT snoozes FROM {schema}.background_jobs
WHERE id = $1 AND attempts = $2 AND CASE status WHEN 'running' THEN true ELSE false END;

-- name: retry_job
-- Give a finished-without-success job a fresh set of attempts.
UPDATE {schema}.background_jobs
SET status = 'pending', attempts = 0, scheduled_at = now(), finished_at = NULL, cancel_requested_at = NULL,
    progress = NULL
WHERE id = $1 AND status IN ('failed', 'dead', 'cancelled')
RETURNING id, queue;

-- name: retry_all_of_type
UPDATE {schema}.background_jobs
SET status = 'pending', attempts = 0, scheduled_at = now(), finished_at = NULL, cancel_requested_at = NULL,
    progress = NULL
WHERE job_type = $1 AND status IN ('failed', 'dead')
RETURNING id, queue;

-- name: status_counts
SELECT job_type, status, count(*) AS jobs
FROM {schema}.background_jobs
GROUP BY job_type, status
ORDER BY job_type, status;

-- name: oldest_runnable
-- Age of the oldest job that could run now, per queue (walks the claim index).
SELECT queue,
       extract(epoch FROM now() - least(greatest(min(scheduled_at), '1970-01-01+00'::timestamptz),
                                         '9999-12-31+00'::timestamptz))::float8 AS age_seconds,
       count(*) AS runnable
FROM {schema}.background_jobs
WHERE status = 'pending' AND scheduled_at <= now()
GROUP BY queue
ORDER BY queue;

-- name: recent_dead
SELECT id, job_type, status, attempts, finished_at, last_error
FROM {schema}.background_jobs
WHERE status IN ('dead', 'failed')
ORDER BY finished_at DESC NULLS LAST
LIMIT $1;

-- name: acquire_leadership
-- Take or renew the named lease for $2; returns a row only when $2 holds it afterwards.
INSERT INTO {schema}.jobrunner_leaders AS l (name, holder, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3::float8))
ON CONFLICT (name) DO UPDATE
SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
RETURNING l.holder;

-- name: release_leadership
DELETE FROM {schema}.jobrunner_leaders WHERE name = $1 AND holder = $2;

-- name: sample_queue_depth
-- Only live rows (pending, running), each status through its own partial index, so sampling
-- costs the same however much history the table holds (sql/functions/sample_queue_depth.sql).
-- Finished jobs are counted by the counters.
SELECT queue, status, jobs, oldest_runnable_seconds FROM {schema}.sample_queue_depth();

-- name: database_ready
SELECT 1;

-- name: hot_table_vacuum_state
-- What the vacuumer decides on: is autovacuum on for background_jobs (server switch and table
-- option), may this role VACUUM it (the table's or the database's owner, or a member of either;
-- superusers are members of every role), and its dead and live rows.
SELECT current_setting('autovacuum')::bool
           AND coalesce((SELECT option_value::bool FROM pg_options_to_table(c.reloptions)
                         WHERE option_name = 'autovacuum_enabled'), true) AS autovacuum_on,
       pg_has_role(c.relowner, 'MEMBER')
           OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'MEMBER')
           AS may_vacuum,
       coalesce(s.n_dead_tup, 0) AS dead_rows,
       coalesce(s.n_live_tup, 0) AS live_rows
FROM pg_class AS c
LEFT JOIN pg_stat_all_tables AS s ON s.relid = c.oid
WHERE c.oid = '{schema}.background_jobs'::regclass;

-- name: vacuum_hot_table
VACUUM (ANALYZE) {schema}.background_jobs;
