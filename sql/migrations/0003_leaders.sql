-- Short leases on named roles ("queue_sampler", …) so that one replica at a time does a job
-- that would be wasteful or wrong to do on all of them. A holder renews before expires_at;
-- when it dies, another takes over once the lease has run out.
CREATE TABLE IF NOT EXISTS {schema}.jobrunner_leaders (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);

ALTER TABLE {schema}.jobrunner_leaders ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS jobrunner_leaders_worker_all ON {schema}.jobrunner_leaders;
CREATE POLICY jobrunner_leaders_worker_all ON {schema}.jobrunner_leaders
    FOR ALL TO jobrunner_worker USING (true) WITH CHECK (true);
REVOKE ALL ON {schema}.jobrunner_leaders FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.jobrunner_leaders TO jobrunner_worker;
GRANT SELECT ON {schema}.jobrunner_migrations TO jobrunner_worker;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON {schema}.jobrunner_leaders FROM %I', r);
            EXECUTE format('REVOKE ALL ON {schema}.jobrunner_migrations FROM %I', r);
        END IF;
    END LOOP;
END
$$;
