-- The daemon's claim, the only one: up to p_limit runnable jobs for worker p_worker, each
-- marked running with a lease of p_lease seconds, in one call whatever the number of limited
-- job types and queues. Returned with `limited`: whether a limited part took the job (the
-- daemon starts those first).
--
-- Its parts, each a claim_part:
-- * the unlimited part: the queues p_queues (those without queue limits), every job type but
--   the limited ones (p_types) and those paused for upstream back-pressure;
-- * each limited type in p_queues, then for each limited queue (p_limited_queues) its other
--   types and then each limited type in it. The limited parts together take at most
--   least(p_limit, p_limited_limit) jobs (the daemon passes its slots free now: a limited job
--   waiting for a slot would hold its global slot and a spent token), each type at most its
--   room in this process (p_type_rooms, NULL for none).
-- Which side goes first alternates (p_limited_first), so that neither starves the other.
-- Paused queues (jobrunner_queue_pauses: `jobrunner pause`, the dashboard) are left out by the
-- walks and the limited parts' probes, inside statements they run anyway: a pause holds on every
-- replica from its next claim on, and costs a claim one probe of a table of a few rows.
-- A limited part with no runnable job costs one index probe and takes no lock.
-- When the limited parts had no room left (no slot free now) but one of them would have taken
-- a job, the claim says so with one more row whose id is NULL: under a backlog every slot is
-- busy and the jobs claimed ahead keep the line full, so the daemon then stops claiming ahead
-- until a slot is free for the limited job; it would wait for good otherwise.
--
-- Per limited type i: p_max_running[i], p_rates[i] per p_periods[i] seconds and p_key_max[i]
-- running per concurrency key, all NULL for a type limited in this process alone. Per limited
-- queue j: p_queue_max_running[j], p_queue_rates[j] per p_queue_periods[j] seconds.
--
-- The byte budget: the claim stops adding jobs once their payloads sum past p_max_bytes
-- (JOBRUNNER_CLAIM_MAX_BYTES), always taking at least one, so that what a daemon holds at once
-- is bounded in memory however large the payloads.
--
-- A function, so that its plans are made once per connection: PL/pgSQL keeps one plan per
-- statement per session, and the SET clauses (in force in the walks it calls) make it the
-- generic plan and pin it to the ordered index walks whatever the table held when it was
-- planned (tests/test_query_plans.py). JIT is off: the disabled scans' penalty costs would
-- otherwise cross jit_above_cost and compile on every claim. The chosen ids reach the UPDATE as
-- an array, so it finds them through the primary key. Taking the lease counts the attempt.
-- Committed like any write (flushed): a claim lost in a server crash would hand the same
-- attempt number to the next holder, and the fencing on (id, attempt) could no longer tell the
-- two runs apart.
-- requires: claim_part, jobrunner_worker_only

CREATE OR REPLACE FUNCTION {schema}.claim_jobs(
    p_worker             text,
    p_lease              float8,
    p_limit              integer,
    p_max_bytes          bigint,
    p_queues             text[],
    p_limited_limit      integer,
    p_limited_first      boolean,
    p_types              text[],
    p_type_rooms         integer[],
    p_max_running        integer[],
    p_rates              integer[],
    p_periods            float8[],
    p_key_max            integer[],
    p_limited_queues     text[],
    p_queue_max_running  integer[],
    p_queue_rates        integer[],
    p_queue_periods      float8[]
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
    waited_seconds float8,
    limited        boolean
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_chosen        bigint[] := '{}';
    v_limited       bigint[] := '{}';
    v_bytes         bigint := 0;
    v_room          integer;
    v_type_taken    integer[] := array_fill(0, ARRAY[coalesce(cardinality(p_types), 0)]);
    v_part          record;
    v_queue         integer;
    v_type          integer;
    v_limit_type    boolean;
    v_type_room     integer;
    v_wanting       boolean := false;
    v_runnable      text[];
BEGIN
    IF NOT p_limited_first AND p_limit > 0 AND cardinality(p_queues) > 0 THEN
        SELECT * INTO v_part FROM {schema}.claim_part(
            'queue', p_queues, p_types, NULL, NULL, p_limit, false, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, v_chosen, p_max_bytes, false);
        v_chosen := v_part.ids;
        v_bytes := v_part.bytes;
    END IF;

    -- the limited types with a runnable job in the queues without limits, in one statement:
    -- one probe of the type index each (in its order, which no other index gives), so that a
    -- type with nothing waiting costs the claim no more than that
    IF cardinality(p_types) > 0 AND cardinality(p_queues) > 0 THEN
        SELECT coalesce(array_agg(t.job_type), '{}') INTO v_runnable
        FROM unnest(p_types) AS t(job_type)
        WHERE EXISTS (SELECT FROM {schema}.background_jobs AS b
                      WHERE b.status = 'pending' AND b.job_type = t.job_type AND b.scheduled_at <= now()
                        AND b.queue = ANY(p_queues)
                      ORDER BY b.priority DESC, b.scheduled_at
                      LIMIT 1);
    END IF;

    -- the limited parts: v_queue 0 is the queues without limits, where only the limited types
    -- are left to claim; in limited queue v_queue, v_type 0 is the queue's other types
    v_room := least(p_limit, p_limited_limit) - cardinality(v_chosen);
    <<queues>>
    FOR v_queue IN CASE WHEN cardinality(v_runnable) > 0 THEN 0 ELSE 1 END
                   .. coalesce(cardinality(p_limited_queues), 0) LOOP
        CONTINUE WHEN v_queue = 0 AND coalesce(cardinality(p_queues), 0) = 0;
        FOR v_type IN CASE WHEN v_queue = 0 THEN 1 ELSE 0 END .. coalesce(cardinality(p_types), 0) LOOP
            v_type_room := CASE WHEN v_type > 0 AND p_type_rooms[v_type] IS NOT NULL
                                THEN p_type_rooms[v_type] - v_type_taken[v_type] END;
            -- out of room, the rest are only looked at (until one would take a job)
            EXIT queues WHEN v_room <= 0 AND v_wanting;
            CONTINUE WHEN v_room <= 0 AND v_type_room <= 0;
            CONTINUE WHEN v_queue = 0 AND NOT p_types[v_type] = ANY(v_runnable);
            v_limit_type := v_type > 0 AND (p_max_running[v_type] IS NOT NULL OR p_rates[v_type] IS NOT NULL
                                            OR p_key_max[v_type] IS NOT NULL);
            SELECT * INTO v_part FROM {schema}.claim_part(
                CASE WHEN v_type = 0 THEN 'queue' WHEN p_key_max[v_type] IS NULL THEN 'type' ELSE 'keys' END,
                CASE WHEN v_queue = 0 THEN p_queues ELSE ARRAY[p_limited_queues[v_queue]] END,
                p_types,
                CASE WHEN v_type > 0 THEN p_types[v_type] END,
                CASE WHEN v_type > 0 THEN p_key_max[v_type] END,
                least(v_room, coalesce(v_type_room, v_room)),
                v_limit_type,
                CASE WHEN v_type > 0 THEN p_max_running[v_type] END,
                CASE WHEN v_type > 0 THEN p_rates[v_type] END,
                CASE WHEN v_type > 0 THEN p_periods[v_type] END,
                CASE WHEN v_queue > 0 THEN p_limited_queues[v_queue] END,
                CASE WHEN v_queue > 0 THEN p_queue_max_running[v_queue] END,
                CASE WHEN v_queue > 0 THEN p_queue_rates[v_queue] END,
                CASE WHEN v_queue > 0 THEN p_queue_periods[v_queue] END,
                v_chosen,
                p_max_bytes - v_bytes,
                v_room <= 0);
            v_wanting := v_wanting OR v_part.wanting;
            IF cardinality(v_part.ids) > 0 THEN
                v_chosen := v_chosen || v_part.ids;
                v_limited := v_limited || v_part.ids;
                v_bytes := v_bytes + v_part.bytes;
                v_room := v_room - cardinality(v_part.ids);
                IF v_type > 0 THEN
                    v_type_taken[v_type] := v_type_taken[v_type] + cardinality(v_part.ids);
                END IF;
            END IF;
        END LOOP;
    END LOOP;

    IF p_limited_first AND p_limit > cardinality(v_chosen) AND cardinality(p_queues) > 0 THEN
        SELECT * INTO v_part FROM {schema}.claim_part(
            'queue', p_queues, p_types, NULL, NULL, p_limit - cardinality(v_chosen), false, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, v_chosen, p_max_bytes - v_bytes, false);
        v_chosen := v_chosen || v_part.ids;
    END IF;

    IF v_wanting THEN
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::integer, NULL::integer,
                            NULL::integer, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::float8, true;
    END IF;
    IF cardinality(v_chosen) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE {schema}.background_jobs AS j
    SET status = 'running',
        attempts = j.attempts + 1,
        started_at = now(),
        lease_expires_at = now() + make_interval(secs => p_lease),
        worker_id = p_worker
    WHERE j.id = ANY(v_chosen)
    RETURNING j.id, j.job_type, j.queue, j.payload::text, j.priority, j.attempts, j.max_attempts,
              j.created_at, j.scheduled_at, j.dedupe_key,
              -- clamped: a row written with scheduled_at = '-infinity' must not break every claim
              extract(epoch FROM now() - least(greatest(j.scheduled_at, '1970-01-01+00'::timestamptz),
                                               '9999-12-31+00'::timestamptz))::float8,
              j.id = ANY(v_limited);
END
$$;

SELECT {schema}.jobrunner_worker_only('{schema}.claim_jobs(text, float8, integer, bigint, text[], integer, boolean, text[], integer[], integer[], integer[], float8[], integer[], text[], integer[], integer[], float8[])');
