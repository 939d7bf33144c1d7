-- Job flows: a job that waits for other jobs (its parents) and runs once all of them finished;
-- a group of jobs with a callback is such a job with the group as its parents
-- (docs/how-to/flows.md, docs/reference/sql.md).
--
-- A dependent waits in status 'blocked', which no claim reads: the claim index and every claim
-- walk take status = 'pending' only, so a blocked job costs a claim nothing, and a job outside a
-- flow costs nothing more than before. The parents' outcome writes (the completer's
-- record_outcomes, the rescuer, cancel_job, the dashboard, a hand-written UPDATE or DELETE)
-- release their dependents in the same transaction, through a row trigger whose WHEN clause is
-- false for every job without dependents (background_jobs_settle_dependents says how): nothing
-- polls, and a crash between a parent's outcome and its dependents' release cannot happen.

-- == The dependent's side, on its own row =======================================================
-- NULL for a job outside a flow; a NULL costs no byte in the row (the row's null bitmap already
-- has room for them).
ALTER TABLE {schema}.background_jobs
    -- the parents, as given to enqueue_dependent_job: what the job's handler reads the results of
    ADD COLUMN depends_on        bigint[],
    -- parents not finished yet: the job is blocked while this is above 0
    ADD COLUMN waiting_on        integer,
    -- parents that ended failed, dead or cancelled (or were deleted unfinished)
    ADD COLUMN parents_failed    integer,
    -- what a failed parent does to this job: 'cancel' it at once (the default), or 'run' it
    -- anyway once every parent finished (a group's callback)
    ADD COLUMN on_parent_failure text,
    -- true on a job that others depend on: the trigger's WHEN clause tests only this. NULL, not
    -- false, on every other job, for the same reason as above.
    ADD COLUMN has_dependents    boolean;

-- The two checks below are NOT VALID: PostgreSQL checks every row written from now on, and does
-- not scan the rows already there, which satisfy them by construction (the new column is NULL
-- in all of them; their statuses are of the old set, which the new one contains). Validating
-- would read the whole table while this migration holds its exclusive lock, stopping every
-- claim and outcome write for as long as that takes on a large queue.
ALTER TABLE {schema}.background_jobs
    ADD CONSTRAINT background_jobs_on_parent_failure_check
        CHECK (on_parent_failure IS NULL OR on_parent_failure IN ('cancel', 'run')) NOT VALID;

-- 'blocked' joins the statuses
ALTER TABLE {schema}.background_jobs DROP CONSTRAINT background_jobs_status_check;
ALTER TABLE {schema}.background_jobs ADD CONSTRAINT background_jobs_status_check CHECK (
    status IN ('pending', 'running', 'completed', 'failed', 'dead', 'cancelled', 'blocked')) NOT VALID;

-- == The parents' side: who waits for whom ======================================================
-- One row per (parent, dependent) while the parent has not finished: the trigger deletes a
-- parent's rows when it releases their dependents, so the table holds only live edges and stays
-- small however many flows ran. No foreign keys: they would add a check to every DELETE of
-- background_jobs (the pruner's), which the trigger's DELETE case covers instead.
CREATE TABLE {schema}.jobrunner_job_dependencies (
    parent_id bigint NOT NULL,
    job_id    bigint NOT NULL,
    PRIMARY KEY (parent_id, job_id)
);

ALTER TABLE {schema}.jobrunner_job_dependencies ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobrunner_job_dependencies_worker_all ON {schema}.jobrunner_job_dependencies
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
REVOKE ALL ON {schema}.jobrunner_job_dependencies FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.jobrunner_job_dependencies TO jobrunner_worker;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON {schema}.jobrunner_job_dependencies FROM %I', r);
        END IF;
    END LOOP;
END
$$;

-- == The release, at the parent's outcome =======================================================
-- jobrunner:functions background_jobs_settle_dependents

-- A parent reaching an end status: UPDATE OF status, so that updates of other columns (a
-- heartbeat, progress) do not even evaluate the WHEN clause.
CREATE TRIGGER background_jobs_settle_dependents
    AFTER UPDATE OF status ON {schema}.background_jobs
    FOR EACH ROW
    WHEN (NEW.has_dependents AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('completed', 'failed', 'dead', 'cancelled'))
    EXECUTE FUNCTION {schema}.background_jobs_settle_dependents();

-- A parent deleted before it finished (the dashboard deletes pending jobs): for its dependents,
-- as if it had failed. Finished parents (the pruner's rows) released theirs when they finished.
CREATE TRIGGER background_jobs_settle_dependents_deleted
    AFTER DELETE ON {schema}.background_jobs
    FOR EACH ROW
    WHEN (OLD.has_dependents AND OLD.status IN ('pending', 'running', 'blocked'))
    EXECUTE FUNCTION {schema}.background_jobs_settle_dependents();
