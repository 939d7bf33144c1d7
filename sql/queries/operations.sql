-- What an operator does to the queue from outside a daemon: pause and resume queues (claim_jobs
-- leaves paused queues out), and the audit trail every such action writes
-- (jobrunner.operations; the dashboard's job actions are in dashboard.sql).

-- name: pause_queue
-- Pause queue $1 for everyone, by $2 with reason $3. Returns a row when it was not paused yet.
INSERT INTO {schema}.jobrunner_queue_pauses (queue, paused_by, reason)
VALUES ($1::text, $2::text, $3::text)
ON CONFLICT (queue) DO NOTHING
RETURNING queue;

-- name: resume_queue
-- Resume queue $1; the idle daemons that work it are woken (at commit) to claim its jobs now.
-- Returns a row when it was paused.
WITH resumed AS (
    DELETE FROM {schema}.jobrunner_queue_pauses WHERE queue = $1::text RETURNING queue
)
SELECT r.queue, pg_notify('jobrunner_{schema_name}', r.queue) AS notified FROM resumed AS r;

-- name: queue_pauses
SELECT queue, paused_at, paused_by, reason
FROM {schema}.jobrunner_queue_pauses
ORDER BY queue;

-- name: record_audit
-- One operator action: $1 actor, $2 via (dashboard, cli), $3 action, $4 target (a JSON object),
-- $5 requested (NULL: no count was confirmed), $6 affected, $7 finished (false: a bulk action
-- that counts into the row as it goes), $8 detail. Returns its id.
INSERT INTO {schema}.jobrunner_audit (actor, via, action, target, requested, affected, finished_at, detail)
VALUES ($1::text, $2::text, $3::text, $4::jsonb, $5::integer, $6::integer,
        CASE WHEN $7::boolean THEN now() END, $8::text)
RETURNING id;

-- name: count_into_audit
-- A bulk action's batch: $2 more jobs changed; $3 ends it, $4 says what was left out.
UPDATE {schema}.jobrunner_audit
SET affected = affected + $2::integer,
    finished_at = CASE WHEN $3::boolean THEN now() END,
    detail = coalesce($4::text, detail)
WHERE id = $1::bigint;
