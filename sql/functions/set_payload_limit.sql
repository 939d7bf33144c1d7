-- The operator's knob for the payload size limit: `SELECT jobrunner.set_payload_limit(4194304)`.
-- Only the table's owner may call it (ALTER TABLE needs ownership anyway, and EXECUTE is nobody
-- else's). It re-creates the named constraint with the new number, NOT VALID: rows already
-- stored stay (they were accepted under the limit of their day), every new row is held to the
-- new limit. The constraint is the one source of truth, visible in \d, the same for every
-- replica, whatever their settings. ALTER TABLE takes an ACCESS EXCLUSIVE lock for an instant:
-- it waits for running claims.
-- requires: refuse_large_payload

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

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.set_payload_limit(integer) FROM %I', r);
        END IF;
    END LOOP;
END
$$;
