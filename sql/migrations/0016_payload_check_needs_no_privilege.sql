-- The payload size CHECK calls refuse_large_payload(), and PostgreSQL checks EXECUTE on every
-- function of a CHECK expression when a statement that evaluates it starts, not only when the
-- call is reached. Revoked from PUBLIC, it made every INSERT or UPDATE by a role outside
-- jobrunner_enqueuer/jobrunner_worker fail, small payloads included (an operator's role, a
-- platform's service role that bypasses row security). It only raises the limit's error and
-- reads nothing, so anyone may execute it.
GRANT EXECUTE ON FUNCTION {schema}.refuse_large_payload(integer, integer) TO PUBLIC;
