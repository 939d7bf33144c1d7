-- How often a name was greeted. A function file holds the function's current text and its
-- grants; `jobrunner migrate` applies it again whenever the file changes.
CREATE OR REPLACE FUNCTION public.greetings_of(p_name text)
RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FROM public.greetings WHERE name = p_name
$$;

REVOKE ALL ON FUNCTION public.greetings_of(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.greetings_of(text) TO jobrunner_worker;
