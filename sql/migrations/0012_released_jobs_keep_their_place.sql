-- A job handed back unfinished (released: at shutdown, or after waiting
-- JOBRUNNER_PREFETCH_TTL for a slot in a process that claimed it ahead) now
-- - keeps its scheduled_at: it goes back to the place in the queue it had, and its start delay
--   and the oldest-runnable age still count from when it became runnable (0011 set now(),
--   which sent it behind every job of its priority and hid how long it had waited);
-- - ends `cancelled` when a cancel was requested while it was held: the request found it
--   neither running nor waiting in the process (the hand-back was on its way), and 0011 put it
--   back to pending with the request still set, to run again. (The daemon's stats and metrics
--   count it as released: record_outcomes returns only the ids it wrote.)
-- Otherwise record_outcomes is 0011's, and so are its privileges (CREATE OR REPLACE keeps them).
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
        SET status = CASE WHEN o.released AND j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                          ELSE o.status END,
            attempts = CASE WHEN o.released THEN j.attempts - 1 ELSE j.attempts END,
            release_count = CASE WHEN o.released AND j.cancel_requested_at IS NULL
                                 THEN j.release_count + 1 ELSE j.release_count END,
            scheduled_at = CASE WHEN o.released THEN j.scheduled_at
                                WHEN o.status = 'pending' THEN now() + make_interval(secs => o.retry_in)
                                ELSE j.scheduled_at END,
            finished_at = CASE WHEN o.status = 'pending'
                                    AND NOT (o.released AND j.cancel_requested_at IS NOT NULL)
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
