#!/usr/bin/env bash
# The plugin template (examples/plugin-template) as a user gets it: built into a wheel,
# installed beside jobrunner's own wheel in a fresh virtualenv, and used on an empty database.
# `jobrunner migrate` must create the plugin's table and function, the daemon must register and
# run its job type, and `jobrunner schedules` must list its schedule.
#
# Needs PostgreSQL at DATABASE_URL (default: the local server on 127.0.0.1:5432) and the network
# (pip installs the lock). Creates one database of its own and drops it again.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

admin_url="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
work="$(mktemp -d)"
db="jobrunner_plugin_template_$$_$(date +%s)"
venv="$work/venv"

fail() {
    echo "check_plugin_template: $*" >&2
    exit 1
}

# create/drop the database with the test venv's asyncpg
admin() {
    "$repo/.venv/bin/python" - "$admin_url" "$1" "$db" <<'PY'
import asyncio, sys

import asyncpg


async def main(url: str, action: str, name: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        if action == "create":
            await conn.execute(f'CREATE DATABASE "{name}"')
        else:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


asyncio.run(main(*sys.argv[1:]))
PY
}

created=""
cleanup() {
    if [ -n "$created" ]; then
        admin drop || echo "check_plugin_template: could not drop database $db" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "-- building jobrunner's wheel and the template's"
.venv/bin/pip wheel -q --no-deps -w "$work/dist" . ./examples/plugin-template
core_wheel="$(ls "$work"/dist/jobrunner-*.whl)"
plugin_wheel="$(ls "$work"/dist/my_jobs-*.whl)"
.venv/bin/python - "$plugin_wheel" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
for wanted in ("my_jobs/migrations/0001_greetings.sql", "my_jobs/functions/greetings_of.sql", "my_jobs/sql/queries.sql"):
    assert wanted in names, f"the template's wheel lacks {wanted}: {names}"
print(f"plugin wheel: {len(names)} files")
PY

echo "-- both in a fresh venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q --require-hashes -r requirements/lock.txt
"$venv/bin/pip" install -q --no-deps "$core_wheel" "$plugin_wheel"
"$venv/bin/pip" check

admin create
created=1
db_url="$(.venv/bin/python -c 'import sys; from tests.support import database_url_for; print(database_url_for(*sys.argv[1:]))' "$admin_url" "$db")"
# run from the work folder, so nothing of this checkout is importable but what was installed
cd "$work"
export DATABASE_URL="$db_url" JOBRUNNER_HTTP_PORT=0 JOBRUNNER_LOG_FORMAT=json

"$venv/bin/jobrunner" migrate | tee "$work/migrate.txt"
grep -q "my_jobs/0001_greetings" "$work/migrate.txt" || fail "migrate did not apply the template's migration"
grep -q "my_jobs/functions/greetings_of" "$work/migrate.txt" || fail "migrate did not apply the template's function file"

job_id="$("$venv/bin/jobrunner" enqueue greet --payload '{"name": "Ada"}')"
run_log="$("$venv/bin/jobrunner" run --burst 2>&1)" || fail "jobrunner run --burst failed: $run_log"
grep '"daemon started"' <<<"$run_log" | grep -q '"job_types": \["greet"\]' \
    || fail "the daemon did not register greet alone: $(grep '"daemon started"' <<<"$run_log")"
schedules="$("$venv/bin/jobrunner" schedules --json)" || fail "jobrunner schedules failed: $schedules"
grep -q '"name": "my_jobs.morning-greeting"' <<<"$schedules" \
    || fail "jobrunner schedules does not list the template's schedule: $schedules"

"$venv/bin/python" - "$job_id" <<'PY'
import asyncio
import os
import sys

import asyncpg


async def main(job_id: int) -> None:
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        job = await conn.fetchrow("SELECT status, result::text FROM background_jobs WHERE id = $1", job_id)
        assert job["status"] == "completed", f"the greet job ended {job['status']}"
        names = [r["name"] for r in await conn.fetch("SELECT name FROM public.greetings WHERE job_id = $1", job_id)]
        assert names == ["Ada"], f"public.greetings holds {names}"
    finally:
        await conn.close()
    print(f"greet job {job_id}: completed, result {job['result']}, row in public.greetings")


asyncio.run(main(int(sys.argv[1])))
PY
echo "check_plugin_template: the template builds, installs, migrates and runs"
