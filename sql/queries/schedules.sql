-- The cron scheduler's statements (table: jobrunner_schedules).

-- name: register_schedule
-- A replica writes its definition of schedule $1 when it starts. An unchanged definition
-- (jsonb equality: key order does not matter) writes nothing; a changed one bumps the version.
-- $3 is the creation time (NULL: now), from which a new schedule's first tick is counted.
-- Returns the version when something was written.
INSERT INTO {schema}.jobrunner_schedules AS s (name, definition, created_at, updated_at, updated_by)
VALUES ($1, $2::jsonb, coalesce($3::timestamptz, now()), coalesce($3::timestamptz, now()), $4)
ON CONFLICT (name) DO UPDATE
SET definition = EXCLUDED.definition,
    version = s.version + 1,
    updated_at = EXCLUDED.updated_at,
    updated_by = EXCLUDED.updated_by
WHERE s.definition IS DISTINCT FROM EXCLUDED.definition
RETURNING s.version;

-- name: list_schedules
-- Every schedule, with the database's clock: ticks are judged by one clock, not each host's
-- (one row with a NULL name when there is no schedule).
SELECT clock.db_now, s.name, s.definition::text AS definition, s.version, s.created_at, s.updated_at,
       s.updated_by, s.last_tick, s.last_fired_at, s.last_job_id
FROM (SELECT now() AS db_now) AS clock
LEFT JOIN {schema}.jobrunner_schedules AS s ON true
ORDER BY s.name;

-- name: advance_schedule_tick
-- Claim tick $2 of schedule $1 as computed from definition version $3. Racing replicas queue on
-- the row lock; once the winner commits the others re-check the WHERE, see the new last_tick
-- and update nothing. Run in the same transaction as the job's INSERT.
UPDATE {schema}.jobrunner_schedules
SET last_tick = $2, last_fired_at = now(), last_job_id = NULL
WHERE name = $1 AND version = $3 AND (last_tick IS NULL OR last_tick < $2)
RETURNING name;

-- name: record_schedule_job
UPDATE {schema}.jobrunner_schedules SET last_job_id = $2 WHERE name = $1;

-- name: remove_schedule
DELETE FROM {schema}.jobrunner_schedules WHERE name = $1 RETURNING name;

-- name: enqueue_scheduled_job
-- Named arguments: parameters enqueue_job gains later (with defaults) leave this call valid.
SELECT {schema}.enqueue_job(job_type => $1::text, payload => $2::jsonb, queue => $3::text,
                            priority => $4::integer, max_attempts => $5::integer, dedupe_key => $6::text);
