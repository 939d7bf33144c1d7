-- One claim path: claim_jobs (sql/functions/claim_jobs.sql) claims the unlimited and the limited
-- job types and queues in one call, through the walks in claim_walk_*.sql. The claims it
-- replaces go, with the signature claim_jobs had before.
DROP FUNCTION IF EXISTS {schema}.claim_limited_jobs(text[], text, integer, float8, text, integer, integer, float8, integer);
DROP FUNCTION IF EXISTS {schema}.claim_jobs_within_limits(text[], text, integer, float8, text, text[], integer, integer,
                                                           float8, integer, text, integer, integer, float8, bigint);
DROP FUNCTION IF EXISTS {schema}.claim_jobs(text[], text, integer, float8, text[], bigint);

-- The walk of one job type (claim_walk_type, claim_walk_keys) and the probe of a limited type
-- for runnable jobs, in claim order within the type. It replaces background_jobs_type_pending_idx
-- (job_type, concurrency_key), which only found a type's jobs: claiming them in order then
-- sorted the type's whole backlog.
DROP INDEX IF EXISTS {schema}.background_jobs_type_pending_idx;
CREATE INDEX background_jobs_type_claim_idx
    ON {schema}.background_jobs (job_type, priority DESC, scheduled_at, id)
    WHERE status = 'pending';
