-- The completer's batched outcome write. A row is only written while this worker still holds
-- the attempt it ran (same attempt number, still running): a worker that lost its lease (paused,
-- cut off) cannot overwrite what the job's next holder does. Returns the ids it wrote. Plain
-- completions (no result, no error: most of them) come as two arrays; every other outcome in the
-- eight after them. A job handed back unfinished (released: at shutdown, or after waiting
-- JOBRUNNER_PREFETCH_TTL for a slot in a process that claimed it ahead) keeps its scheduled_at,
-- so it goes back to its place in the queue and its waiting time still counts; it ends
-- `cancelled` when a cancel was requested while it was held (the request found it neither
-- running nor waiting in the process). A snoozed job (status `snoozed` in p_statuses: the
-- handler raised Snooze) is pending again after its retry_in seconds with its attempt given
-- back and its `snoozes` counted; cancelled instead when a cancel was requested while it ran.
--
-- A function, for the reason claim_jobs is one: a plan made once per connection, each UPDATE
-- with its own cached generic plan, the second running only when the batch holds outcomes other
-- than plain completions. Rows are found by id, never through background_jobs_lease_idx: the
-- status test is written as a CASE so that the planner cannot prove that index's predicate from
-- it (its statistics are mostly taken with few jobs running, and the planner would then walk every
-- running row of every replica for each outcome). The SET clauses are claim_jobs'.

CREATE OR REPLACE FUNCTION {schema}.record_outcomes(
    p_completed_ids      bigint[],
    p_completed_attempts integer[],
    p_ids                bigint[],
    p_attempts           integer[],
    p_statuses           text[],
    p_retry_in           float8[],
    p_errors             text[],
    p_tracebacks         text[],
    p_results            jsonb[],
    p_released           boolean[]
) RETURNS SETOF bigint
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF cardinality(p_completed_ids) > 0 AND cardinality(p_ids) > 0 THEN
        -- a mixed batch runs both UPDATEs, each locking in its own array's order: take every
        -- row's lock first, in ascending id order, as the heartbeat (extend_leases) takes them,
        -- so that the two cannot deadlock. A batch of one kind locks in its array's order,
        -- which the caller sorts.
        PERFORM 1 FROM {schema}.background_jobs AS j
        WHERE j.id = ANY(p_completed_ids || p_ids)
        ORDER BY j.id
        FOR NO KEY UPDATE;
    END IF;
    IF cardinality(p_completed_ids) > 0 THEN
        RETURN QUERY
        UPDATE {schema}.background_jobs AS j
        SET status = 'completed',
            finished_at = now(),
            lease_expires_at = NULL,
            result = NULL
        FROM unnest(p_completed_ids, p_completed_attempts) AS o(id, attempt)
        WHERE j.id = o.id AND j.attempts = o.attempt AND CASE j.status WHEN 'running' THEN true ELSE false END
        RETURNING j.id;
    END IF;
    IF cardinality(p_ids) > 0 THEN
        RETURN QUERY
        UPDATE {schema}.background_jobs AS j
        SET status = CASE WHEN (o.released OR o.status = 'snoozed') AND j.cancel_requested_at IS NOT NULL
                          THEN 'cancelled'
                          WHEN o.status = 'snoozed' THEN 'pending'
                          ELSE o.status END,
            attempts = CASE WHEN o.released OR o.status = 'snoozed' THEN j.attempts - 1 ELSE j.attempts END,
            release_count = CASE WHEN o.released AND j.cancel_requested_at IS NULL
                                 THEN j.release_count + 1 ELSE j.release_count END,
            snoozes = CASE WHEN o.status = 'snoozed' AND j.cancel_requested_at IS NULL
                           THEN j.snoozes + 1 ELSE j.snoozes END,
            scheduled_at = CASE WHEN o.released THEN j.scheduled_at
                                WHEN o.status IN ('pending', 'snoozed') THEN now() + make_interval(secs => o.retry_in)
                                ELSE j.scheduled_at END,
            finished_at = CASE WHEN o.status IN ('pending', 'snoozed')
                                    AND NOT ((o.released OR o.status = 'snoozed') AND j.cancel_requested_at IS NOT NULL)
                               THEN NULL ELSE now() END,
            lease_expires_at = NULL,
            last_error = CASE WHEN o.error IS NULL THEN j.last_error ELSE o.error END,
            last_error_traceback = CASE WHEN o.error IS NULL THEN j.last_error_traceback ELSE o.traceback END,
            result = o.result
        FROM unnest(p_ids, p_attempts, p_statuses, p_retry_in, p_errors, p_tracebacks, p_results, p_released)
             AS o(id, attempt, status, retry_in, error, traceback, result, released)
        WHERE j.id = o.id AND j.attempts = o.attempt AND CASE j.status WHEN 'running' THEN true ELSE false END
        RETURNING j.id;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION {schema}.record_outcomes(bigint[], integer[], bigint[], integer[], text[], float8[], text[], text[], jsonb[], boolean[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.record_outcomes(bigint[], integer[], bigint[], integer[], text[], float8[], text[], text[], jsonb[], boolean[]) TO jobrunner_worker;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.record_outcomes(bigint[], integer[], bigint[], integer[], text[], float8[], text[], text[], jsonb[], boolean[]) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
