-- Snooze: a handler asks to run again later without spending an attempt (raise Snooze(seconds)):
-- polling an external job, waiting for a webhook. Each snooze gives the attempt back and counts
-- here; record_outcomes (sql/functions/record_outcomes.sql) writes both. The daemon turns a
-- snooze past the handler's max_snoozes into a failed attempt, so a job cannot snooze for ever.
ALTER TABLE {schema}.background_jobs
    ADD COLUMN snoozes integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT background_jobs_snoozes_check CHECK (snoozes >= 0);
