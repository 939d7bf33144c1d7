-- Hardening the core's objects against less-privileged roles of the same database.
--
-- Sequences. Supabase's default privileges (ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT
-- ALL ON SEQUENCES TO anon, authenticated) give every new sequence to its API roles, and
-- `setval('background_jobs_id_seq', 9223372036854775807)` by anon stopped every enqueue. No role
-- but a sequence's owner needs any privilege on the core's sequences: an identity column draws
-- its value without checking the inserting role's sequence privileges. This function takes
-- every privilege but the owner's off each sequence a core table owns (background_jobs and the
-- jobrunner_* tables, identity and serial columns alike); a migration that adds such a table
-- calls it again (tests/test_core_privileges.py fails on a core sequence that grants anything).
CREATE OR REPLACE FUNCTION {schema}.jobrunner_revoke_sequence_privileges() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seq     regclass;
    grantee text;
BEGIN
    FOR seq, grantee IN
        SELECT DISTINCT s.oid::regclass,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END
        FROM pg_catalog.pg_class AS s
        JOIN pg_catalog.pg_depend AS d
          ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = s.oid
         AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
        JOIN pg_catalog.pg_class AS t ON t.oid = d.refobjid
        CROSS JOIN LATERAL pg_catalog.aclexplode(s.relacl) AS a
        WHERE s.relkind = 'S'
          AND t.relnamespace = (SELECT n.oid FROM pg_catalog.pg_namespace AS n WHERE n.nspname = '{schema_name}')
          AND (t.relname = 'background_jobs' OR t.relname LIKE 'jobrunner\_%')
          AND a.grantee <> s.relowner
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON SEQUENCE %s FROM %s', seq, grantee);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION {schema}.jobrunner_revoke_sequence_privileges() FROM PUBLIC;
SELECT {schema}.jobrunner_revoke_sequence_privileges();

-- search_path. A function resolves the names in its body through the search_path of whoever
-- runs it. Every core function another role may run (the worker's claim, outcome and sampling
-- functions, cancel_job, the notify trigger that runs as whoever inserts) now pins it, as
-- enqueue_job and enqueue_jobs (SECURITY DEFINER) already did: its tables are qualified with
-- the schema, and its built-ins come from pg_catalog, not from an object a caller placed first.
ALTER FUNCTION {schema}.background_jobs_notify() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION {schema}.cancel_job(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION {schema}.claim_limited_jobs(text[], text, integer, float8, text, integer, integer, float8, integer)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION {schema}.claim_jobs_within_limits(text[], text, integer, float8, text, text[], integer, integer,
                                                  float8, integer, text, integer, integer, float8)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION {schema}.claim_jobs(text[], text, integer, float8, text[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION {schema}.record_outcomes(bigint[], integer[], bigint[], integer[], text[], float8[], text[], text[],
                                         jsonb[], boolean[])
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION {schema}.sample_queue_depth() SET search_path = pg_catalog, pg_temp;

-- A trigger function runs without EXECUTE being checked; nobody needs to call it directly.
REVOKE ALL ON FUNCTION {schema}.background_jobs_notify() FROM PUBLIC;

-- enqueue_jobs (SECURITY DEFINER) checks its arguments: unnest pads shorter arrays with NULLs,
-- which silently turned a caller's mismatched arrays into default-valued jobs. Otherwise it is
-- 0007's, and so are its privileges (CREATE OR REPLACE keeps them).
CREATE OR REPLACE FUNCTION {schema}.enqueue_jobs(
    job_types        text[],
    payloads         jsonb[],
    queues           text[],
    priorities       integer[],
    scheduled_ats    timestamptz[],
    max_attempts     integer[],
    dedupe_keys      text[],
    concurrency_keys text[]
) RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer := coalesce(pg_catalog.cardinality(job_types), 0);
BEGIN
    IF pg_catalog.array_ndims(job_types) > 1
       OR coalesce(pg_catalog.cardinality(payloads), 0) <> n OR coalesce(pg_catalog.cardinality(queues), 0) <> n
       OR coalesce(pg_catalog.cardinality(priorities), 0) <> n OR coalesce(pg_catalog.cardinality(scheduled_ats), 0) <> n
       OR coalesce(pg_catalog.cardinality(max_attempts), 0) <> n OR coalesce(pg_catalog.cardinality(dedupe_keys), 0) <> n
       OR coalesce(pg_catalog.cardinality(concurrency_keys), 0) <> n THEN
        RAISE EXCEPTION 'enqueue_jobs: every array must have one element per job (% job types)', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    INSERT INTO {schema}.background_jobs AS j
        (job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key)
    SELECT t.job_type, coalesce(t.payload, '{}'::jsonb), coalesce(t.queue, 'default'), coalesce(t.priority, 0),
           coalesce(t.scheduled_at, pg_catalog.now()), coalesce(t.max_attempts, 5), t.dedupe_key, t.concurrency_key
    -- unnest of many arrays is syntax (ROWS FROM), not a function that can be qualified
    FROM unnest(job_types, payloads, queues, priorities, scheduled_ats, max_attempts, dedupe_keys, concurrency_keys)
         AS t(job_type, payload, queue, priority, scheduled_at, max_attempts, dedupe_key, concurrency_key)
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running')
    DO NOTHING
    RETURNING j.id;
END
$$;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.background_jobs_notify() FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.jobrunner_revoke_sequence_privileges() FROM %I', r);
        END IF;
    END LOOP;
END
$$;
