-- The trigger function that wakes idle daemons when jobs are inserted (the trigger itself is in
-- the baseline migration): one notification per queue per statement, and PostgreSQL folds
-- duplicates within a transaction; only rows runnable now are announced, delayed rows are found
-- by polling. The channel is per schema, so daemons of another schema stay asleep.
-- A trigger function runs without EXECUTE being checked, so nobody is granted it. Its
-- search_path is pinned because it runs as whoever inserts.

CREATE OR REPLACE FUNCTION {schema}.background_jobs_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('jobrunner_' || TG_TABLE_SCHEMA, q.queue)
    FROM (SELECT DISTINCT queue FROM new_rows WHERE status = 'pending' AND scheduled_at <= now()) AS q;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION {schema}.background_jobs_notify() FROM PUBLIC;

-- Supabase grants its API roles every new function in public by default: take it back.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION {schema}.background_jobs_notify() FROM %I', r);
        END IF;
    END LOOP;
END
$$;
