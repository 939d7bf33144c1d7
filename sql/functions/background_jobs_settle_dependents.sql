-- The trigger function that releases a parent's dependents when it finishes (its triggers are in
-- migration 0004_flows.sql): it runs inside the statement that wrote the parent's outcome, so the
-- outcome and the release commit together or not at all. Only parents run it: the triggers' WHEN
-- clause tests has_dependents, which no other job has.
--
-- For each dependent still blocked (one row of jobrunner_job_dependencies, deleted here, so a
-- parent releases a dependent once however often its status changes later):
--   - the parent completed: one parent fewer to wait for; the last one makes the job pending;
--   - the parent failed, died, was cancelled or was deleted unfinished: counted in
--     parents_failed; a job with on_parent_failure = 'cancel' ends cancelled at once with the
--     reason in last_error (and its own dependents are released in turn, by this trigger on
--     its row), one with 'run' waits for the other parents and then runs.
-- A dependent that is no longer blocked (cancelled by hand, or by an earlier failed parent) is
-- left as it is. A parent's dependents are locked in id order. Two outcome batches whose
-- parents share several dependents can still meet them in opposite orders (the rows of a batch
-- run this one after the other); PostgreSQL then aborts one batch as a deadlock, and the
-- completer writes it again (a transaction rollback error is transient to it). A fan-in, one
-- dependent per parent, cannot.
-- A trigger function runs without EXECUTE being checked, so nobody is granted it. Its
-- search_path is pinned because it runs as whoever writes the parent's outcome.

CREATE OR REPLACE FUNCTION {schema}.background_jobs_settle_dependents() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_parent  bigint;
    v_outcome text;
    v_failed  boolean;
    v_ids     bigint[];
    v_queues  text[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        v_parent := OLD.id;
        v_outcome := 'deleted';
    ELSE
        v_parent := NEW.id;
        v_outcome := NEW.status;
    END IF;
    v_failed := v_outcome <> 'completed';

    WITH released AS (
        DELETE FROM {schema}.jobrunner_job_dependencies AS d
        WHERE d.parent_id = v_parent
        RETURNING d.job_id
    )
    SELECT array_agg(released.job_id ORDER BY released.job_id) INTO v_ids FROM released;
    IF v_ids IS NULL THEN
        RETURN NULL;
    END IF;

    PERFORM 1 FROM {schema}.background_jobs AS j
    WHERE j.id = ANY(v_ids) AND j.status = 'blocked'
    ORDER BY j.id
    FOR NO KEY UPDATE;

    WITH settled AS (
        UPDATE {schema}.background_jobs AS j
        SET waiting_on = j.waiting_on - 1,
            parents_failed = j.parents_failed + CASE WHEN v_failed THEN 1 ELSE 0 END,
            status = CASE WHEN v_failed AND j.on_parent_failure = 'cancel' THEN 'cancelled'
                          WHEN j.waiting_on <= 1 THEN 'pending'
                          ELSE 'blocked' END,
            finished_at = CASE WHEN v_failed AND j.on_parent_failure = 'cancel' THEN now() END,
            last_error = CASE WHEN v_failed AND j.on_parent_failure = 'cancel'
                              THEN format('cancelled: parent job %s ended %s', v_parent, v_outcome)
                              ELSE j.last_error END
        WHERE j.id = ANY(v_ids) AND j.status = 'blocked'
        RETURNING j.status, j.queue, j.scheduled_at
    )
    SELECT array_agg(DISTINCT settled.queue) INTO v_queues FROM settled
    WHERE settled.status = 'pending' AND settled.scheduled_at <= now();
    -- wake idle daemons, as background_jobs_notify does for inserted jobs
    PERFORM pg_notify('jobrunner_' || TG_TABLE_SCHEMA, q.queue) FROM unnest(v_queues) AS q(queue);
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION {schema}.background_jobs_settle_dependents() FROM PUBLIC;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.background_jobs_settle_dependents() FROM %I', r);
        END IF;
    END LOOP;
END
$$;
