-- name: migration_lock
-- Held until the migration run's transaction ends: replicas starting together migrate one after
-- another. A transaction-level lock, so that it also works through a transaction pooler.
SELECT pg_advisory_xact_lock(hashtext('jobrunner:migrate:{schema_name}'));

-- name: create_migrations_table
-- What `jobrunner migrate` applied, per component (the core, each plugin): one row per numbered
-- migration, and one per function file (version NULL) holding the checksum of the text last
-- applied, so that a changed file is applied again.
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.jobrunner_migrations (
    component  text        NOT NULL,
    version    integer,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobrunner_migrations_version_key UNIQUE (component, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS jobrunner_migrations_function_key
    ON {schema}.jobrunner_migrations (component, name) WHERE version IS NULL;

-- name: applied
-- Every component's bookkeeping in one statement: a daemon checks it at start (and its readiness
-- probe every few seconds), one round trip per statement on a new connection.
SELECT component, version, name, checksum FROM {schema}.jobrunner_migrations;

-- name: record_migration
INSERT INTO {schema}.jobrunner_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4);

-- name: record_function
INSERT INTO {schema}.jobrunner_migrations AS m (component, version, name, checksum) VALUES ($1, NULL, $2, $3)
ON CONFLICT (component, name) WHERE version IS NULL
DO UPDATE SET checksum = excluded.checksum, applied_at = now();

-- name: migrations_table_exists
SELECT to_regclass('{schema_name}.jobrunner_migrations') IS NOT NULL;
