-- The plugin's table. Numbered migrations are applied once, in order, and never edited
-- afterwards: a change is a new file (0002_...).
CREATE TABLE public.greetings (
    job_id bigint PRIMARY KEY,              -- one row per job: a second run changes nothing
    name text NOT NULL,
    greeted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX greetings_name ON public.greetings (name);

-- the daemon runs as a role granted jobrunner_worker
GRANT SELECT, INSERT ON public.greetings TO jobrunner_worker;
