-- What an operator does to the queue from outside a daemon (`jobrunner pause`/`resume`, the web
-- dashboard): paused queues, honoured by every claim, and the audit trail of every such action;
-- and the index the dashboard finds failed, dead and cancelled jobs through.

-- == Paused queues =============================================================================
-- One row per paused queue. claim_jobs reads this table on every claim and leaves these queues
-- out, so a pause holds on every replica from its next claim on; the table is the truth (a
-- notification would only be a hint). Jobs are still accepted into a paused queue, and jobs
-- already claimed run on.
CREATE TABLE {schema}.jobrunner_queue_pauses (
    queue     text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    -- who paused it: a dashboard user, `cli:<os user>`, ...
    paused_by text        NOT NULL,
    reason    text,
    CONSTRAINT jobrunner_queue_pauses_queue_check CHECK (queue <> '' AND length(queue) <= 200),
    CONSTRAINT jobrunner_queue_pauses_paused_by_check CHECK (length(paused_by) <= 200),
    CONSTRAINT jobrunner_queue_pauses_reason_check CHECK (reason IS NULL OR length(reason) <= 1000)
);

-- == The audit trail ===========================================================================
-- One row per operator action: who, what, when, on which jobs or queue, how many. A bulk action
-- ("everything matching this filter") writes its row first and counts into it batch by batch;
-- finished_at stays NULL until its last batch is done.
CREATE TABLE {schema}.jobrunner_audit (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    -- dashboard | cli
    via         text        NOT NULL,
    -- retry | cancel | delete | run_now | set_priority | pause_queue | resume_queue | run_schedule
    action      text        NOT NULL,
    -- {"jobs": [ids]}, {"filter": {...}}, {"queue": "..."}, {"schedule": "..."}
    target      jsonb       NOT NULL,
    -- the number the operator confirmed (a bulk action's count); NULL when it had none
    requested   integer,
    -- the jobs (or queues, schedules) the action changed
    affected    integer     NOT NULL DEFAULT 0,
    finished_at timestamptz,
    -- what was left out and why, e.g. jobs whose dedupe key a live job holds
    detail      text,
    CONSTRAINT jobrunner_audit_actor_check CHECK (length(actor) <= 200),
    CONSTRAINT jobrunner_audit_target_check CHECK (jsonb_typeof(target) = 'object')
);

-- == The dashboard's index =====================================================================
-- The jobs that did not succeed, newest first: the dashboard's most used filter (failed, dead,
-- cancelled) finds them without reading past the completed history. A job enters it only when
-- it ends unsuccessfully, so claims and completions never write to it.
CREATE INDEX background_jobs_unsuccessful_idx
    ON {schema}.background_jobs (id)
    WHERE status IN ('failed', 'dead', 'cancelled');

-- == Row security and privileges, as for the other tables (0001_baseline.sql) ===================
ALTER TABLE {schema}.jobrunner_queue_pauses ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.jobrunner_audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobrunner_queue_pauses_worker_all ON {schema}.jobrunner_queue_pauses
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
CREATE POLICY jobrunner_audit_worker_all ON {schema}.jobrunner_audit
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);

REVOKE ALL ON {schema}.jobrunner_queue_pauses, {schema}.jobrunner_audit FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.jobrunner_queue_pauses, {schema}.jobrunner_audit
    TO jobrunner_worker;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON {schema}.jobrunner_queue_pauses, {schema}.jobrunner_audit FROM %I', r);
        END IF;
    END LOOP;
END
$$;

-- jobrunner_audit's identity sequence: no privilege for anyone but its owner
-- jobrunner:functions jobrunner_revoke_sequence_privileges
SELECT {schema}.jobrunner_revoke_sequence_privileges();
