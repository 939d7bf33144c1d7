#!/usr/bin/env bash
# The two distributions as users get them: both wheels built from this clone, installed into a
# fresh virtualenv one after the other. The core alone must bring none of the app: no handler, no
# schedule, no dependency, and `jobrunner migrate` must create only the queue's objects. The app's
# plugin wheel on top adds its tables, handlers and schedules.
#
# Needs PostgreSQL at DATABASE_URL (default: the local server on 127.0.0.1:5432) and the network
# (pip installs the locks). Creates one database of its own and drops it again.
set -euo pipefail
cd "$(dirname "$0")/.."

admin_url="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
work="$(mktemp -d)"
db="jobrunner_wheels_$$_$(date +%s)"
venv="$work/venv"
py="$venv/bin/python"

fail() {
    echo "check_wheels: $*" >&2
    exit 1
}

# the database is created and dropped with the test venv's asyncpg, before and after the fresh venv
admin() {
    .venv/bin/python - "$admin_url" "$1" "$db" <<'EOF'
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
EOF
}

created=""
cleanup() {
    if [ -n "$created" ]; then
        admin drop || echo "check_wheels: could not drop database $db" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "-- building both wheels"
.venv/bin/pip wheel -q --no-deps -w "$work/dist" . ./handlers
core_wheel="$(ls "$work"/dist/jobrunner-*.whl)"
app_wheel="$(ls "$work"/dist/glow_app_jobs-*.whl)"
# what each wheel holds: the core no plugin; the plugin its migrations and named SQL
.venv/bin/python - "$core_wheel" "$app_wheel" <<'EOF'
import sys
import zipfile

core, app = (zipfile.ZipFile(path).namelist() for path in sys.argv[1:])
assert not [n for n in core if n.startswith("jobrunner_handlers/")], "the core wheel ships the app plugin"
assert any(n.startswith("jobrunner/sql/migrations/") for n in core), "the core wheel lacks its migrations"
entry_points = next(n for n in core if n.endswith(".dist-info/entry_points.txt"))
assert b"jobrunner_handlers" not in zipfile.ZipFile(sys.argv[1]).read(entry_points), "the core registers the app"
sql = sorted(n for n in app if n.endswith(".sql"))
assert any(n.startswith("jobrunner_handlers/migrations/") for n in sql), "the plugin wheel lacks its migrations"
assert "jobrunner_handlers/sql/queries.sql" in sql, "the plugin wheel lacks its named SQL"
assert any(n.startswith("jobrunner_handlers/functions/") for n in sql), "the plugin wheel lacks its function files"
assert any(n.startswith("jobrunner/sql/functions/") for n in core), "the core wheel lacks its function files"
for asset in ("templates/base.html", "static/htmx.min.js", "static/sse.min.js", "static/dashboard.js"):
    assert f"jobrunner/dashboard/{asset}" in core, f"the core wheel lacks the dashboard's {asset}"
print(f"core wheel: {len(core)} files; plugin wheel: {len(app)} files, its SQL:")
print("\n".join(f"  {n}" for n in sql))
EOF

echo "-- the core wheel alone in a fresh venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q --require-hashes -r requirements/lock.txt
"$venv/bin/pip" install -q --no-deps "$core_wheel"
"$venv/bin/pip" check
"$py" - <<'EOF'
import importlib.util
from importlib.metadata import entry_points

present = [m for m in ("jobrunner_handlers", "openai", "PIL", "tenacity", "httpx", "sentry_sdk") if importlib.util.find_spec(m)]
assert not present, f"the core alone installed {present}"
for group in ("jobrunner.handlers", "jobrunner.schedules", "jobrunner.migrations", "jobrunner.samplers", "jobrunner.settings"):
    assert not list(entry_points(group=group)), f"something registers in {group} with the core alone"
# the web dashboard is an extra: without it, no web stack, and the command says what to install
web = [m for m in ("starlette", "jinja2", "uvicorn") if importlib.util.find_spec(m)]
assert not web, f"the core alone installed {web}"
EOF
if dashboard_out="$("$venv/bin/jobrunner" dashboard 2>&1)"; then
    fail "jobrunner dashboard ran without the dashboard extra"
fi
case "$dashboard_out" in
    *"jobrunner[dashboard]"*) ;;
    *) fail "jobrunner dashboard without its extra said: $dashboard_out" ;;
esac

admin create
created=1
db_url="$(.venv/bin/python -c 'import sys; from tests.support import database_url_for; print(database_url_for(*sys.argv[1:]))' "$admin_url" "$db")"
export DATABASE_URL="$db_url" JOBRUNNER_HTTP_PORT=0 JOBRUNNER_LOG_FORMAT=json

# app objects; roles are the server's, so a Supabase role counts only if this run created it
inspect() {
    "$py" - "$1" <<'EOF'
import asyncio
import json
import os
import sys

import asyncpg

from jobrunner.migrate import CORE_COMPONENT


async def main(phase: str) -> None:
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        components = {r[0] for r in await conn.fetch("SELECT DISTINCT component FROM jobrunner_migrations")}
        policies = await conn.fetchval(
            "SELECT count(*) FROM pg_policies WHERE roles && ARRAY['anon', 'authenticated', 'service_role']::name[]"
        )
        supabase_roles = {
            r[0] for r in await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role')")
        }
        grants = await conn.fetchval(
            "SELECT count(*) FROM information_schema.role_table_grants"
            " WHERE grantee IN ('anon', 'authenticated', 'service_role')"
        )
    finally:
        await conn.close()
    print(json.dumps({"phase": phase, "tables": sorted(tables), "components": sorted(components)}))
    if phase == "core":
        queue = {t for t in tables if t == "background_jobs" or t.startswith(("background_jobs_", "jobrunner_"))}
        assert tables == queue, f"the core alone created tables that are not the queue's: {sorted(tables - queue)}"
        assert components == {CORE_COMPONENT}, f"migrations of {sorted(components - {CORE_COMPONENT})}"
        assert policies == 0, f"{policies} row-level security policies for Supabase roles"
        assert grants == 0, f"{grants} grants to Supabase roles"
        before = set(json.loads(os.environ["SUPABASE_ROLES_BEFORE"]))
        assert supabase_roles <= before, f"the core alone created roles {sorted(supabase_roles - before)}"
    else:
        missing = {"profiles", "glow_analyses", "products", "notifications"} - tables
        assert not missing, f"the plugin's migrations did not create {sorted(missing)}"
        assert components > {CORE_COMPONENT}, f"no plugin's migrations recorded: {sorted(components)}"
        assert supabase_roles == {"anon", "authenticated", "service_role"}, supabase_roles


asyncio.run(main(sys.argv[1]))
EOF
}

SUPABASE_ROLES_BEFORE="$("$py" - <<'EOF'
import asyncio, json, os

import asyncpg


async def main() -> None:
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    roles = [r[0] for r in await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role')")]
    await conn.close()
    print(json.dumps(roles))


asyncio.run(main())
EOF
)"
export SUPABASE_ROLES_BEFORE

"$venv/bin/jobrunner" migrate
inspect core
core_run="$("$venv/bin/jobrunner" run --burst 2>&1)" || fail "jobrunner run --burst failed with the core alone: $core_run"
grep '"daemon started"' <<<"$core_run" | grep -q '"job_types": \[\]' \
    || fail "the core alone registered job types: $(grep '"daemon started"' <<<"$core_run")"

echo "-- the plugin's wheel added to the same venv"
"$venv/bin/pip" install -q --require-hashes -r requirements/lock-app.txt
"$venv/bin/pip" install -q --no-deps "$app_wheel"
"$venv/bin/pip" check
"$venv/bin/jobrunner" migrate
inspect app
app_run="$("$venv/bin/jobrunner" run --burst 2>&1)" || fail "jobrunner run --burst failed with the plugin: $app_run"
started="$(grep '"daemon started"' <<<"$app_run")" || fail "no start line: $app_run"
for job_type in analyze_image generate_recommendations send_notification cleanup_old_data; do
    grep -q "\"$job_type\"" <<<"$started" || fail "jobrunner run does not list $job_type: $started"
done
echo "$started"
schedules="$("$venv/bin/jobrunner" schedules --json 2>&1)" || fail "jobrunner schedules failed: $schedules"
grep -q '"job_type": "refresh_user_statistics"' <<<"$schedules" || fail "jobrunner schedules does not list the app's: $schedules"
echo "$schedules"
echo "check_wheels: both wheels install and behave on their own"
