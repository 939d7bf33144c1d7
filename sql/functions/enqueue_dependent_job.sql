-- Enqueue one job that runs once every job of depends_on (its parents) has finished, through SQL
-- or Supabase RPC; returns its id. A group with a callback is the group's jobs (enqueue_jobs)
-- and then this with their ids and on_parent_failure => 'run', in the same transaction.
--
-- The job starts 'blocked' while a parent is unfinished (pending, running or blocked itself),
-- 'pending' when all have completed already. What a parent that fails, dies or is cancelled
-- does to it, now or later (background_jobs_settle_dependents does the later):
--   on_parent_failure => 'cancel' (the default): the job ends cancelled, last_error naming the
--                        parent; jobs that depend on it are released in turn;
--   on_parent_failure => 'run': it runs once every parent finished, however they ended;
--                        parents_failed counts those that did not complete.
-- The arguments after depends_on are enqueue_job's, but no dedupe_key: the key of a blocked job
-- could not be held for it (the key's index covers pending and running jobs) and would make the
-- parent's outcome write fail when the job became pending beside another holder.
--
-- Whose jobs may be parents: a caller acting as jobrunner_worker (the daemon's and the app's
-- trusted role) may name any job. Any other caller, an enqueuer, may only name jobs its own
-- transaction enqueued (the group and its callback in one transaction): the enqueuer reads
-- nothing of the queue, and a dependency on someone else's job would tell it whether that job
-- exists and how it ended. The caller is the role it acts as: the one set with SET ROLE (which
-- PostgREST does), else the login role; SECURITY DEFINER does not change either, and the
-- `role` setting cannot be given a role the caller is not a member of. A job of this
-- transaction is one whose row version this transaction wrote (its xmin is this transaction's
-- id): a job enqueued inside a savepoint carries the savepoint's id and does not count, so enqueue
-- the parents and the dependent at the same level. A missing job and someone else's give the
-- same error.
--
-- SECURITY DEFINER, as enqueue_job: it reads the parents and writes the dependency rows, which
-- the enqueuer role cannot; its search_path is pinned so that a caller cannot substitute objects.

CREATE OR REPLACE FUNCTION {schema}.enqueue_dependent_job(
    depends_on        bigint[],
    job_type          text,
    payload           jsonb       DEFAULT '{}'::jsonb,
    queue             text        DEFAULT 'default',
    priority          integer     DEFAULT 0,
    scheduled_at      timestamptz DEFAULT NULL,
    max_attempts      integer     DEFAULT 5,
    concurrency_key   text        DEFAULT NULL,
    on_parent_failure text        DEFAULT 'cancel'
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_parents   bigint[];
    v_caller    text;
    v_trusted   boolean;
    v_own_xid   text;
    v_found     integer;
    v_live      bigint[];
    v_failed    integer;
    v_first_bad text;
    v_foreign   bigint;
    v_status    text;
    v_new_id    bigint;
BEGIN
    IF enqueue_dependent_job.payload IS NULL THEN
        RAISE EXCEPTION 'enqueue_dependent_job: payload must be a JSON object, not NULL (leave it out for {})'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF enqueue_dependent_job.on_parent_failure IS NULL
       OR enqueue_dependent_job.on_parent_failure NOT IN ('cancel', 'run') THEN
        RAISE EXCEPTION 'enqueue_dependent_job: on_parent_failure must be ''cancel'' or ''run'', not %',
            coalesce(enqueue_dependent_job.on_parent_failure, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(cardinality(enqueue_dependent_job.depends_on), 0) = 0
       OR array_ndims(enqueue_dependent_job.depends_on) > 1
       OR array_position(enqueue_dependent_job.depends_on, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'enqueue_dependent_job: depends_on must be a non-empty array of job ids without NULLs'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_parents := ARRAY(SELECT DISTINCT p.id FROM unnest(enqueue_dependent_job.depends_on) AS p(id) ORDER BY p.id);
    IF cardinality(v_parents) > 100000 THEN
        RAISE EXCEPTION 'enqueue_dependent_job: at most 100000 parents, not %', cardinality(v_parents)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;

    v_caller := CASE current_setting('role') WHEN 'none' THEN session_user::text ELSE current_setting('role') END;
    v_trusted := pg_has_role(v_caller, 'jobrunner_worker', 'USAGE');
    -- this transaction's id, as the 32-bit xid a row's xmin holds
    v_own_xid := (pg_current_xact_id()::text::bigint & 4294967295)::text;

    -- the parents, locked in id order (as the outcome writes lock them): a parent cannot finish
    -- between this read and the dependency rows below, it finishes before (and is counted as
    -- finished) or after (and finds the rows)
    SELECT count(*),
           array_agg(p.id) FILTER (WHERE p.status IN ('pending', 'running', 'blocked')),
           count(*) FILTER (WHERE p.status IN ('failed', 'dead', 'cancelled')),
           (array_agg(format('%s ended %s', p.id, p.status) ORDER BY p.id)
                FILTER (WHERE p.status IN ('failed', 'dead', 'cancelled')))[1],
           min(p.id) FILTER (WHERE NOT v_trusted AND p.x <> v_own_xid)
    INTO v_found, v_live, v_failed, v_first_bad, v_foreign
    FROM (SELECT j.id, j.status, j.xmin::text AS x
          FROM {schema}.background_jobs AS j
          WHERE j.id = ANY(v_parents)
          ORDER BY j.id
          FOR NO KEY UPDATE) AS p;
    IF v_foreign IS NOT NULL OR (NOT v_trusted AND v_found < cardinality(v_parents)) THEN
        RAISE EXCEPTION 'enqueue_dependent_job: job % is not a job this transaction enqueued',
            coalesce(v_foreign, (SELECT min(p.id) FROM unnest(v_parents) AS p(id)
                                 WHERE NOT EXISTS (SELECT FROM {schema}.background_jobs AS j WHERE j.id = p.id)))
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'an enqueuer may only depend on jobs enqueued in the same transaction';
    END IF;
    IF v_found < cardinality(v_parents) THEN
        RAISE EXCEPTION 'enqueue_dependent_job: there is no job % (never enqueued, or pruned)',
            (SELECT min(p.id) FROM unnest(v_parents) AS p(id)
             WHERE NOT EXISTS (SELECT FROM {schema}.background_jobs AS j WHERE j.id = p.id))
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    v_status := CASE WHEN v_failed > 0 AND enqueue_dependent_job.on_parent_failure = 'cancel' THEN 'cancelled'
                     WHEN v_live IS NOT NULL THEN 'blocked'
                     ELSE 'pending' END;
    INSERT INTO {schema}.background_jobs AS j
        (job_type, payload, queue, priority, scheduled_at, max_attempts, concurrency_key, status,
         finished_at, last_error, depends_on, waiting_on, parents_failed, on_parent_failure)
    VALUES (enqueue_dependent_job.job_type, enqueue_dependent_job.payload,
            coalesce(enqueue_dependent_job.queue, 'default'), coalesce(enqueue_dependent_job.priority, 0),
            coalesce(enqueue_dependent_job.scheduled_at, now()), coalesce(enqueue_dependent_job.max_attempts, 5),
            enqueue_dependent_job.concurrency_key, v_status,
            CASE WHEN v_status = 'cancelled' THEN now() END,
            CASE WHEN v_status = 'cancelled' THEN format('cancelled: parent job %s', v_first_bad) END,
            v_parents, CASE WHEN v_status = 'blocked' THEN cardinality(v_live) ELSE 0 END, v_failed,
            enqueue_dependent_job.on_parent_failure)
    RETURNING j.id INTO v_new_id;

    IF v_status = 'blocked' THEN
        UPDATE {schema}.background_jobs AS j SET has_dependents = true
        WHERE j.id = ANY(v_live) AND j.has_dependents IS NOT TRUE;
        INSERT INTO {schema}.jobrunner_job_dependencies (parent_id, job_id)
        SELECT p.id, v_new_id FROM unnest(v_live) AS p(id);
    END IF;
    RETURN v_new_id;
END
$$;

REVOKE ALL ON FUNCTION {schema}.enqueue_dependent_job(bigint[], text, jsonb, text, integer, timestamptz, integer, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.enqueue_dependent_job(bigint[], text, jsonb, text, integer, timestamptz, integer, text, text) TO jobrunner_worker, jobrunner_enqueuer;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.enqueue_dependent_job(bigint[], text, jsonb, text, integer, timestamptz, integer, text, text) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
