-- background_jobs_type_live_idx (0006) held running rows too, so that limited claims could
-- count a type's running jobs by index; every claim paid for it with one more index entry.
-- The running set is small and background_jobs_lease_idx holds exactly it, so those counts
-- read that instead, and the type index keeps only what limited claims pick from: pending rows.
DROP INDEX IF EXISTS {schema}.background_jobs_type_live_idx;
CREATE INDEX IF NOT EXISTS background_jobs_type_pending_idx
    ON {schema}.background_jobs (job_type, concurrency_key)
    WHERE status = 'pending';
