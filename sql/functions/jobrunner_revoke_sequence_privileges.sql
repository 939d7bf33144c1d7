-- Takes every privilege but the owner's off each sequence a core table owns (background_jobs and
-- the jobrunner_* tables, identity and serial columns alike). Supabase's default privileges give
-- every new sequence in public to its API roles, and `setval('background_jobs_id_seq', ...)` by
-- anon would stop every enqueue. No role but a sequence's owner needs any privilege on the core's
-- sequences: an identity column draws its value without checking the inserting role's sequence
-- privileges. The baseline calls it; a migration that adds a table owning a sequence calls it
-- again (tests/test_core_privileges.py fails on a core sequence that grants anything).

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

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.jobrunner_revoke_sequence_privileges() FROM %I', r);
        END IF;
    END LOOP;
END
$$;
