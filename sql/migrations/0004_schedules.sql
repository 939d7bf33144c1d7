-- Cron schedules. One row per schedule; the row, not any replica's memory, decides which tick
-- fires: a replica fires a tick by moving last_tick forward with a conditional UPDATE and
-- inserting the job in the same transaction, so however many replicas race, one wins.
CREATE TABLE IF NOT EXISTS {schema}.jobrunner_schedules (
    name          text        PRIMARY KEY,
    -- cron, timezone, job_type, payload, priority, queue, max_attempts, missed: what every
    -- replica computes ticks from (written by a replica when it starts, see jobrunner.schedules)
    definition    jsonb       NOT NULL,
    -- bumped on every change of definition: a tick computed from an older one does not fire
    version       integer     NOT NULL DEFAULT 1,
    -- ticks at or before this never fire: a new schedule does not backfill
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text,
    -- the latest tick handled (fired, or skipped as missed); NULL until the first one
    last_tick     timestamptz,
    last_fired_at timestamptz,
    -- the job of last_tick; NULL when that tick was skipped
    last_job_id   bigint,
    CONSTRAINT jobrunner_schedules_name_check CHECK (name <> '' AND length(name) <= 200),
    CONSTRAINT jobrunner_schedules_definition_check CHECK (jsonb_typeof(definition) = 'object')
);

ALTER TABLE {schema}.jobrunner_schedules ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS jobrunner_schedules_worker_all ON {schema}.jobrunner_schedules;
CREATE POLICY jobrunner_schedules_worker_all ON {schema}.jobrunner_schedules
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
REVOKE ALL ON {schema}.jobrunner_schedules FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.jobrunner_schedules TO jobrunner_worker;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON {schema}.jobrunner_schedules FROM %I', r);
        END IF;
    END LOOP;
END
$$;
