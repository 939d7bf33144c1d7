-- Payload size, enforced where every path meets: the table, so that a plain INSERT, COPY or
-- either enqueue function cannot hand the daemons payloads that exhaust their memory.
-- What a daemon holds of a job is its payload's JSON text, so that is what is measured:
-- payload_bytes is octet_length(payload::text), computed once when the row is written. A
-- generated column, not a CHECK on the expression: PostgreSQL evaluates every CHECK on every
-- UPDATE, and each claim and outcome write would print the whole payload again; a stored
-- generated column is recomputed only when payload itself changes, which no core statement
-- does. The claim sums it without reading the payload.
ALTER TABLE {schema}.background_jobs
    ADD COLUMN IF NOT EXISTS payload_bytes integer GENERATED ALWAYS AS (octet_length(payload::text)) STORED;

-- Called by the size CHECK only when a row is over the limit (the OR evaluates it last), to say
-- so with the numbers: the plain constraint error would name the constraint and not the limit.
CREATE OR REPLACE FUNCTION {schema}.refuse_large_payload(payload_bytes integer, max_bytes integer) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'payload is % bytes of JSON; the limit is % bytes', payload_bytes, max_bytes
        USING ERRCODE = 'check_violation', CONSTRAINT = 'background_jobs_payload_size_check',
              TABLE = 'background_jobs', SCHEMA = '{schema_name}',
              HINT = 'Store large data elsewhere (e.g. object storage) and pass a reference.';
END
$$;
-- Every role that may insert jobs evaluates the CHECK, and so needs EXECUTE on it.
REVOKE ALL ON FUNCTION {schema}.refuse_large_payload(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.refuse_large_payload(integer, integer) TO jobrunner_worker, jobrunner_enqueuer;

-- The operator's knob: `SELECT jobrunner.set_payload_limit(4194304)`. Only the table's owner may
-- call it (ALTER TABLE needs ownership anyway, and EXECUTE is nobody else's). It re-creates the
-- named constraint with the new number, NOT VALID: rows already stored stay (they were accepted
-- under the limit of their day), every new row is held to the new limit. The constraint is
-- the one source of truth, visible in \d, the same for every replica, whatever their settings.
-- ALTER TABLE takes an ACCESS EXCLUSIVE lock for an instant: it waits for running claims.
CREATE OR REPLACE FUNCTION {schema}.set_payload_limit(max_bytes integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- 268435455: the largest jsonb PostgreSQL stores
    IF max_bytes IS NULL OR max_bytes < 1024 OR max_bytes > 268435455 THEN
        RAISE EXCEPTION 'payload limit must be from 1024 to 268435455 bytes, not %', max_bytes
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('ALTER TABLE {schema}.background_jobs'
                   ' DROP CONSTRAINT IF EXISTS background_jobs_payload_size_check,'
                   ' ADD CONSTRAINT background_jobs_payload_size_check'
                   ' CHECK (payload_bytes <= %1$s OR {schema}.refuse_large_payload(payload_bytes, %1$s)) NOT VALID',
                   max_bytes);
END
$$;
REVOKE ALL ON FUNCTION {schema}.set_payload_limit(integer) FROM PUBLIC;
SELECT {schema}.set_payload_limit(1048576);

-- Claims bounded in bytes as well as in rows: a claim stops adding jobs once their payloads
-- sum past p_max_bytes (JOBRUNNER_CLAIM_MAX_BYTES), always taking at least one, so that the
-- rows a daemon holds at once are bounded in memory however large the payloads. The running
-- sum is a window over the chosen candidates in claim order: it reads payload_bytes from the
-- rows the index walk already locked, and the walk itself is unchanged.
-- The functions without p_max_bytes are dropped: no claim is left unbounded. The new argument
-- comes last with a default, so a call written for the old signature still means the same.
DROP FUNCTION IF EXISTS {schema}.claim_jobs(text[], text, integer, float8, text[]);
-- 0010's claim_jobs, with the byte budget (see 0010 for why it walks the index the way it does)
CREATE FUNCTION {schema}.claim_jobs(
    p_queues     text[],
    p_worker     text,
    p_limit      integer,
    p_lease      float8,
    p_skip_types text[],
    p_max_bytes  bigint DEFAULT 16777216
) RETURNS TABLE (
    id             bigint,
    job_type       text,
    queue          text,
    payload        text,
    priority       integer,
    attempts       integer,
    max_attempts   integer,
    created_at     timestamptz,
    scheduled_at   timestamptz,
    dedupe_key     text,
    waited_seconds float8
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE {schema}.background_jobs AS j
    SET status = 'running',
        attempts = j.attempts + 1,
        started_at = now(),
        lease_expires_at = now() + make_interval(secs => p_lease),
        worker_id = p_worker
    WHERE j.id = ANY(ARRAY(
        SELECT w.id
        FROM (
            SELECT c.id,
                   row_number() OVER claim_order AS n,
                   sum(c.payload_bytes) OVER claim_order AS bytes_so_far
            FROM unnest(p_queues) AS q(name)
            CROSS JOIN LATERAL (
                WITH RECURSIVE levels(priority) AS (
                    (SELECT b.priority FROM {schema}.background_jobs AS b
                     WHERE b.status = 'pending' AND b.queue = q.name
                     ORDER BY b.priority DESC LIMIT 1)
                    UNION ALL
                    SELECT (SELECT b.priority FROM {schema}.background_jobs AS b
                            WHERE b.status = 'pending' AND b.queue = q.name AND b.priority < l.priority
                            ORDER BY b.priority DESC LIMIT 1)
                    FROM levels AS l
                    WHERE l.priority IS NOT NULL
                )
                SELECT picked.id, picked.priority, picked.scheduled_at, picked.payload_bytes
                FROM levels AS l
                CROSS JOIN LATERAL (
                    SELECT b.id, b.priority, b.scheduled_at, b.payload_bytes
                    FROM {schema}.background_jobs AS b
                    WHERE b.status = 'pending' AND b.queue = q.name AND b.priority = l.priority
                      AND b.scheduled_at <= now()
                      AND b.job_type NOT IN (SELECT ls.job_type FROM {schema}.jobrunner_limit_state AS ls
                                             WHERE ls.paused_until > now()
                                             UNION ALL
                                             SELECT s.job_type FROM unnest(p_skip_types) AS s(job_type))
                    ORDER BY b.scheduled_at, b.id
                    LIMIT p_limit
                    FOR UPDATE OF b SKIP LOCKED
                ) AS picked
                WHERE l.priority IS NOT NULL
            ) AS c
            WINDOW claim_order AS (ORDER BY c.priority DESC, c.scheduled_at, c.id ROWS UNBOUNDED PRECEDING)
            ORDER BY c.priority DESC, c.scheduled_at, c.id
            LIMIT p_limit
        ) AS w
        WHERE w.n = 1 OR w.bytes_so_far <= p_max_bytes
    ))
    RETURNING j.id, j.job_type, j.queue, j.payload::text, j.priority, j.attempts, j.max_attempts,
              j.created_at, j.scheduled_at, j.dedupe_key,
              -- clamped: a row written with scheduled_at = '-infinity' must not break every claim
              extract(epoch FROM now() - least(greatest(j.scheduled_at, '1970-01-01+00'::timestamptz),
                                               '9999-12-31+00'::timestamptz))::float8;
END
$$;
REVOKE ALL ON FUNCTION {schema}.claim_jobs(text[], text, integer, float8, text[], bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.claim_jobs(text[], text, integer, float8, text[], bigint) TO jobrunner_worker;

DROP FUNCTION IF EXISTS {schema}.claim_jobs_within_limits(text[], text, integer, float8, text, text[], integer, integer,
                                                          float8, integer, text, integer, integer, float8);
-- 0008's claim_jobs_within_limits, with the byte budget applied to what either branch picks,
-- before the tokens are taken: a job left out by the budget costs no token.
CREATE FUNCTION {schema}.claim_jobs_within_limits(
    p_queues            text[],
    p_worker            text,
    p_limit             integer,
    p_lease             float8,
    p_job_type          text,
    p_skip_types        text[],
    p_max_running       integer,
    p_rate              integer,
    p_period            float8,
    p_key_max           integer,
    p_queue             text,
    p_queue_max_running integer,
    p_queue_rate        integer,
    p_queue_period      float8,
    p_max_bytes         bigint DEFAULT 16777216
) RETURNS SETOF {schema}.background_jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qstate  {schema}.jobrunner_queue_limit_state;
    tstate  {schema}.jobrunner_limit_state;
    allowed integer := p_limit;
    running integer;
    qbucket float8;
    tbucket float8;
    queues  text[] := CASE WHEN p_queue IS NULL THEN p_queues ELSE ARRAY[p_queue] END;
    chosen  bigint[];
BEGIN
    IF p_queue IS NOT NULL THEN
        INSERT INTO {schema}.jobrunner_queue_limit_state (queue, tokens) VALUES (p_queue, coalesce(p_queue_rate, 0))
        ON CONFLICT (queue) DO NOTHING;
        SELECT * INTO qstate FROM {schema}.jobrunner_queue_limit_state WHERE queue = p_queue FOR UPDATE;
        IF p_queue_max_running IS NOT NULL THEN
            -- running rows include those of dead workers until the rescuer frees them
            SELECT count(*) INTO running FROM {schema}.background_jobs
            WHERE queue = p_queue AND status = 'running';
            allowed := least(allowed, p_queue_max_running - running);
        END IF;
        IF p_queue_rate IS NOT NULL THEN
            qbucket := least(p_queue_rate::float8,
                             qstate.tokens + extract(epoch FROM now() - qstate.refilled_at) * p_queue_rate / p_queue_period);
            allowed := least(allowed, floor(qbucket)::integer);
        END IF;
    END IF;

    IF p_job_type IS NOT NULL THEN
        INSERT INTO {schema}.jobrunner_limit_state (job_type, tokens) VALUES (p_job_type, coalesce(p_rate, 0))
        ON CONFLICT (job_type) DO NOTHING;
        SELECT * INTO tstate FROM {schema}.jobrunner_limit_state WHERE job_type = p_job_type FOR UPDATE;
        IF tstate.paused_until IS NOT NULL AND tstate.paused_until > now() THEN
            allowed := 0;
        END IF;
        IF p_max_running IS NOT NULL THEN
            SELECT count(*) INTO running FROM {schema}.background_jobs
            WHERE job_type = p_job_type AND status = 'running';
            allowed := least(allowed, p_max_running - running);
        END IF;
        IF p_rate IS NOT NULL THEN
            tbucket := least(p_rate::float8,
                             tstate.tokens + extract(epoch FROM now() - tstate.refilled_at) * p_rate / p_period);
            allowed := least(allowed, floor(tbucket)::integer);
        END IF;
    END IF;

    IF allowed > 0 AND p_key_max IS NULL THEN
        -- one walk of background_jobs_claim_idx per queue, in claim order (see 0008)
        SELECT array_agg(w.id) INTO chosen FROM (
            SELECT c.id,
                   row_number() OVER claim_order AS n,
                   sum(c.payload_bytes) OVER claim_order AS bytes_so_far
            FROM unnest(queues) AS q(name)
            CROSS JOIN LATERAL (
                SELECT b.id, b.priority, b.scheduled_at, b.payload_bytes FROM {schema}.background_jobs AS b
                WHERE b.status = 'pending' AND b.queue = q.name AND b.scheduled_at <= now()
                  AND (p_job_type IS NULL OR b.job_type = p_job_type)
                  AND (p_job_type IS NOT NULL OR (
                      b.job_type <> ALL(p_skip_types)
                      AND b.job_type NOT IN (SELECT ls.job_type FROM {schema}.jobrunner_limit_state AS ls
                                             WHERE ls.paused_until > now())))
                ORDER BY b.priority DESC, b.scheduled_at, b.id
                LIMIT allowed
                FOR UPDATE OF b SKIP LOCKED
            ) AS c
            WINDOW claim_order AS (ORDER BY c.priority DESC, c.scheduled_at, c.id ROWS UNBOUNDED PRECEDING)
            ORDER BY c.priority DESC, c.scheduled_at, c.id
            LIMIT allowed
        ) AS w
        WHERE w.n = 1 OR w.bytes_so_far <= p_max_bytes;
    ELSIF allowed > 0 THEN
        -- Round robin over keys: every key's first waiting job before any key's second, after
        -- counting what each key already runs; at most p_key_max running per key.
        SELECT array_agg(w.id) INTO chosen FROM (
            SELECT p.id,
                   row_number() OVER claim_order AS n,
                   sum(p.payload_bytes) OVER claim_order AS bytes_so_far
            FROM (
                SELECT c.id, c.payload_bytes, c.priority, c.scheduled_at,
                       CASE WHEN c.concurrency_key IS NULL THEN 1 ELSE c.rank_in_key + coalesce(r.n, 0) END AS turn
                FROM (
                    SELECT id, concurrency_key, priority, scheduled_at, payload_bytes,
                           row_number() OVER (PARTITION BY concurrency_key
                                              ORDER BY priority DESC, scheduled_at, id) AS rank_in_key
                    FROM {schema}.background_jobs
                    WHERE status = 'pending' AND job_type = p_job_type AND queue = ANY(queues)
                      AND scheduled_at <= now()
                ) AS c
                LEFT JOIN (
                    SELECT concurrency_key, count(*) AS n FROM {schema}.background_jobs
                    WHERE status = 'running' AND job_type = p_job_type AND concurrency_key IS NOT NULL
                    GROUP BY concurrency_key
                ) AS r ON r.concurrency_key = c.concurrency_key
                WHERE c.concurrency_key IS NULL OR c.rank_in_key + coalesce(r.n, 0) <= p_key_max
            ) AS p
            WINDOW claim_order AS (ORDER BY p.turn, p.priority DESC, p.scheduled_at, p.id ROWS UNBOUNDED PRECEDING)
            ORDER BY p.turn, p.priority DESC, p.scheduled_at, p.id
            LIMIT allowed
        ) AS w
        WHERE w.n = 1 OR w.bytes_so_far <= p_max_bytes;
        -- lock them; under the type row's lock no other limited claim of this type competes
        SELECT array_agg(id) INTO chosen FROM (
            SELECT id FROM {schema}.background_jobs
            WHERE id = ANY(chosen) AND status = 'pending'
            FOR UPDATE SKIP LOCKED
        ) AS locked;
    END IF;

    -- buckets refill whether or not anything was taken; what was taken comes off both
    IF qbucket IS NOT NULL THEN
        UPDATE {schema}.jobrunner_queue_limit_state
        SET tokens = qbucket - coalesce(cardinality(chosen), 0), refilled_at = now()
        WHERE queue = p_queue;
    END IF;
    IF tbucket IS NOT NULL THEN
        UPDATE {schema}.jobrunner_limit_state
        SET tokens = tbucket - coalesce(cardinality(chosen), 0), refilled_at = now()
        WHERE job_type = p_job_type;
    END IF;
    IF chosen IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE {schema}.background_jobs AS j
    SET status = 'running',
        attempts = j.attempts + 1,
        started_at = now(),
        lease_expires_at = now() + make_interval(secs => p_lease),
        worker_id = p_worker
    WHERE j.id = ANY(chosen)
    RETURNING j.*;
END
$$;
REVOKE ALL ON FUNCTION {schema}.claim_jobs_within_limits(text[], text, integer, float8, text, text[], integer, integer,
                                                         float8, integer, text, integer, integer, float8, bigint)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.claim_jobs_within_limits(text[], text, integer, float8, text, text[], integer,
                                                            integer, float8, integer, text, integer, integer, float8,
                                                            bigint)
    TO jobrunner_worker;

-- 0006's claim of one limited type, which no daemon of this version calls, goes through the
-- bounded claim above (same arguments, the default budget) rather than stay an unbounded one.
CREATE OR REPLACE FUNCTION {schema}.claim_limited_jobs(
    p_queues      text[],
    p_worker      text,
    p_limit       integer,
    p_lease       float8,
    p_job_type    text,
    p_max_running integer,
    p_rate        integer,
    p_period      float8,
    p_key_max     integer
) RETURNS SETOF {schema}.background_jobs
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM {schema}.claim_jobs_within_limits(p_queues, p_worker, p_limit, p_lease, p_job_type, '{}'::text[],
                                                    p_max_running, p_rate, p_period, p_key_max, NULL, NULL, NULL,
                                                    NULL)
$$;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.refuse_large_payload(integer, integer) FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.set_payload_limit(integer) FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.claim_jobs(text[], text, integer, float8, text[], bigint) '
                           'FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.claim_jobs_within_limits(text[], text, integer, float8, '
                           'text, text[], integer, integer, float8, integer, text, integer, integer, float8, bigint) '
                           'FROM %I', r);
        END IF;
    END LOOP;
END
$$;
