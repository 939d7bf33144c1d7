-- One part of a claim (see claim_jobs): up to p_room runnable jobs picked by one walk, under
-- the limits the part has, within what is left of the claim's byte budget. Returns the chosen
-- ids in claim order and their payload bytes; claim_jobs marks them running. With p_peek it
-- takes nothing and locks nothing: `wanting` says whether the part would take a job now if
-- the claim had room for it.
--
-- The walk: 'queue' (claim_walk_queue over each of p_queues, leaving out p_skip_types), 'type'
-- (claim_walk_type of p_job_type) or 'keys' (claim_walk_keys of p_job_type, p_key_max per key).
-- The limits, NULL meaning "no such limit": the queue p_queue's (at most p_queue_max_running
-- running, p_queue_rate starts per p_queue_period seconds) and the job type's (p_max_running,
-- p_rate per p_period; p_limit_type marks a type with such limits, whose state row holds its
-- bucket and its pause). p_chosen: what this claim took in its earlier parts, counted as running.
--
-- A limited part costs nothing while it has no runnable job (none in a paused queue counts): one
-- index probe, no lock. Else it takes its state rows (queue row, then type row) FOR UPDATE SKIP
-- LOCKED: they serialise the limited claims of a type or queue across replicas, so counting
-- running jobs and taking tokens cannot race; a row another replica holds means that replica is claiming this type right now,
-- and this claim leaves the part to it instead of queueing behind it (and never waits on a row,
-- so it cannot deadlock with a claim that takes rows in another order). Rows the daemon did not
-- create at its start (ensure_limit_state) are created here.
-- Running jobs are counted without an index of their own: the running set is small
-- (background_jobs_lease_idx holds exactly it), and every claim would pay to maintain one.
-- The byte budget: a job past what is left of it is not taken (and costs no token), but the
-- claim's first job always is, so that one job larger than the budget still runs.
-- requires: claim_walk_queue, claim_walk_type, claim_walk_keys, jobrunner_worker_only

CREATE OR REPLACE FUNCTION {schema}.claim_part(
    p_walk              text,
    p_queues            text[],
    p_skip_types        text[],
    p_job_type          text,
    p_key_max           integer,
    p_room              integer,
    p_limit_type        boolean,
    p_max_running       integer,
    p_rate              integer,
    p_period            float8,
    p_queue             text,
    p_queue_max_running integer,
    p_queue_rate        integer,
    p_queue_period      float8,
    p_chosen            bigint[],
    p_bytes_left        bigint,
    p_peek              boolean,
    OUT ids             bigint[],
    OUT bytes           bigint,
    OUT wanting         boolean
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_allowed integer := p_room;
    v_running integer;
    v_qstate  {schema}.jobrunner_queue_limit_state;
    v_tstate  {schema}.jobrunner_limit_state;
    v_qbucket float8;
    v_tbucket float8;
    v_first   boolean := coalesce(cardinality(p_chosen), 0) = 0;
BEGIN
    ids := '{}';
    bytes := 0;
    wanting := false;
    IF p_peek THEN
        v_allowed := 1;
    ELSIF v_allowed <= 0 THEN
        RETURN;
    END IF;
    -- The probe, in the order of the index it must walk (the claim index for a limited queue,
    -- the type index for a type), which no other index gives: the planner takes that walk,
    -- where an index on the other column would read past every other job. `scheduled_at` is a
    -- column of both, so a job that is not due yet is passed over inside the index.
    IF p_walk = 'queue' AND p_queue IS NOT NULL THEN
        PERFORM FROM {schema}.background_jobs AS b
        WHERE b.status = 'pending' AND b.queue = p_queue AND b.scheduled_at <= now()
          AND b.job_type NOT IN (SELECT s.job_type FROM unnest(p_skip_types) AS s(job_type))
          AND NOT EXISTS (SELECT FROM {schema}.jobrunner_queue_pauses AS p WHERE p.queue = p_queue)
        ORDER BY b.priority DESC, b.scheduled_at
        LIMIT 1;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    ELSIF p_walk <> 'queue' THEN
        PERFORM FROM {schema}.background_jobs AS b
        WHERE b.status = 'pending' AND b.job_type = p_job_type AND b.scheduled_at <= now()
          AND b.queue = ANY(p_queues) AND b.queue NOT IN (SELECT p.queue FROM {schema}.jobrunner_queue_pauses AS p)
        ORDER BY b.priority DESC, b.scheduled_at
        LIMIT 1;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;

    IF p_queue IS NOT NULL THEN
        IF p_peek THEN
            SELECT * INTO v_qstate FROM {schema}.jobrunner_queue_limit_state WHERE queue = p_queue;
        ELSE
            SELECT * INTO v_qstate FROM {schema}.jobrunner_queue_limit_state WHERE queue = p_queue FOR UPDATE SKIP LOCKED;
        END IF;
        IF NOT FOUND AND NOT p_peek THEN
            INSERT INTO {schema}.jobrunner_queue_limit_state (queue, tokens) VALUES (p_queue, coalesce(p_queue_rate, 0))
            ON CONFLICT (queue) DO NOTHING;
            SELECT * INTO v_qstate FROM {schema}.jobrunner_queue_limit_state WHERE queue = p_queue FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                RETURN;
            END IF;
        END IF;
        IF p_queue_max_running IS NOT NULL THEN
            -- running rows include those of dead workers until the rescuer frees them
            SELECT count(*) INTO v_running FROM {schema}.background_jobs AS b
            WHERE b.queue = p_queue AND b.status = 'running';
            SELECT v_running + count(*) INTO v_running FROM {schema}.background_jobs AS b
            WHERE b.id = ANY(p_chosen) AND b.queue = p_queue;
            v_allowed := least(v_allowed, p_queue_max_running - v_running);
        END IF;
        IF p_queue_rate IS NOT NULL THEN
            v_qbucket := least(p_queue_rate::float8,
                               v_qstate.tokens + extract(epoch FROM now() - v_qstate.refilled_at) * p_queue_rate / p_queue_period);
            v_allowed := least(v_allowed, floor(v_qbucket)::integer);
        END IF;
    END IF;

    IF p_limit_type THEN
        IF p_peek THEN
            SELECT * INTO v_tstate FROM {schema}.jobrunner_limit_state WHERE job_type = p_job_type;
        ELSE
            SELECT * INTO v_tstate FROM {schema}.jobrunner_limit_state WHERE job_type = p_job_type FOR UPDATE SKIP LOCKED;
        END IF;
        IF NOT FOUND AND NOT p_peek THEN
            INSERT INTO {schema}.jobrunner_limit_state (job_type, tokens) VALUES (p_job_type, coalesce(p_rate, 0))
            ON CONFLICT (job_type) DO NOTHING;
            SELECT * INTO v_tstate FROM {schema}.jobrunner_limit_state WHERE job_type = p_job_type FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                RETURN;
            END IF;
        END IF;
        IF v_tstate.paused_until IS NOT NULL AND v_tstate.paused_until > now() THEN
            v_allowed := 0;
        END IF;
        IF p_max_running IS NOT NULL THEN
            SELECT count(*) INTO v_running FROM {schema}.background_jobs AS b
            WHERE b.job_type = p_job_type AND b.status = 'running';
            SELECT v_running + count(*) INTO v_running FROM {schema}.background_jobs AS b
            WHERE b.id = ANY(p_chosen) AND b.job_type = p_job_type;
            v_allowed := least(v_allowed, p_max_running - v_running);
        END IF;
        IF p_rate IS NOT NULL THEN
            v_tbucket := least(p_rate::float8,
                               v_tstate.tokens + extract(epoch FROM now() - v_tstate.refilled_at) * p_rate / p_period);
            v_allowed := least(v_allowed, floor(v_tbucket)::integer);
        END IF;
    ELSIF p_walk <> 'queue' THEN
        -- a type limited in this process alone has no state row to hold, but may be paused
        IF EXISTS (SELECT 1 FROM {schema}.jobrunner_limit_state AS ls
                   WHERE ls.job_type = p_job_type AND ls.paused_until > now()) THEN
            v_allowed := 0;
        END IF;
    END IF;

    IF p_peek THEN
        wanting := v_allowed > 0;
        RETURN;
    END IF;

    IF v_allowed > 0 THEN
        SELECT coalesce(array_agg(w.id ORDER BY w.n), '{}'), coalesce(sum(w.payload_bytes), 0)
        INTO ids, bytes
        FROM (
            SELECT c.id, c.payload_bytes,
                   row_number() OVER claim_order AS n,
                   sum(c.payload_bytes) OVER claim_order AS so_far
            FROM (
                SELECT q.* FROM unnest(p_queues) AS queue_name
                CROSS JOIN LATERAL {schema}.claim_walk_queue(queue_name, p_skip_types, v_allowed) AS q
                WHERE p_walk = 'queue'
                UNION ALL
                SELECT t.* FROM {schema}.claim_walk_type(p_job_type, p_queues, v_allowed) AS t
                WHERE p_walk = 'type'
                UNION ALL
                SELECT k.* FROM {schema}.claim_walk_keys(p_job_type, p_queues, v_allowed, p_key_max) AS k
                WHERE p_walk = 'keys'
            ) AS c
            WINDOW claim_order AS (ORDER BY c.turn, c.priority DESC, c.scheduled_at, c.id ROWS UNBOUNDED PRECEDING)
            ORDER BY c.turn, c.priority DESC, c.scheduled_at, c.id
            LIMIT v_allowed
        ) AS w
        WHERE (w.n = 1 AND v_first) OR w.so_far <= p_bytes_left;
    END IF;

    -- buckets refill whether or not anything was taken; what was taken comes off both
    IF v_qbucket IS NOT NULL THEN
        UPDATE {schema}.jobrunner_queue_limit_state
        SET tokens = v_qbucket - cardinality(ids), refilled_at = now()
        WHERE queue = p_queue;
    END IF;
    IF v_tbucket IS NOT NULL THEN
        UPDATE {schema}.jobrunner_limit_state
        SET tokens = v_tbucket - cardinality(ids), refilled_at = now()
        WHERE job_type = p_job_type;
    END IF;
END
$$;

SELECT {schema}.jobrunner_worker_only('{schema}.claim_part(text, text[], text[], text, integer, integer, boolean, integer, integer, float8, text, integer, integer, float8, bigint[], bigint, boolean)');
