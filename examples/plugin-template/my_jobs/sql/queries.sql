-- Every statement the plugin's handlers run, each headed by `-- name: NAME`
-- (jobrunner.load_queries).

-- name: record_greeting
INSERT INTO public.greetings (job_id, name) VALUES ($1, $2) ON CONFLICT (job_id) DO NOTHING;

-- name: greetings_of
SELECT public.greetings_of($1);
