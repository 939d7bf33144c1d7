-- name: migration_lock
-- Held until the migration run's transaction ends: replicas starting together migrate one after
-- another. A transaction-level lock, so that it also works through a transaction pooler.
SELECT pg_advisory_xact_lock(hashtext('jobrunner:migrate:{schema_name}'));

-- name: create_migrations_table
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.jobrunner_migrations (
    component  text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
);

-- name: applied_migrations
SELECT version, name, checksum FROM {schema}.jobrunner_migrations WHERE component = $1 ORDER BY version;

-- name: record_migration
INSERT INTO {schema}.jobrunner_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4);

-- name: migrations_table_exists
SELECT to_regclass('{schema_name}.jobrunner_migrations') IS NOT NULL;
