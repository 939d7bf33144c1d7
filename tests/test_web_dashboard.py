"""The web dashboard (jobrunner.dashboard) through its ASGI app, against a real database: pages,
filters and keyset pages, actions and their audit rows, bulk actions in batches, pauses,
authentication and roles, CSRF, escaping and redaction, security headers, live updates."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from jobrunner import AsyncClient
from jobrunner.dashboard import create_app, filters
from jobrunner.dashboard.access import AccessPolicy, is_loopback_host
from jobrunner.settings import Settings
from tests import test_security
from tests.support import REPO_ROOT, make_settings, wait_for, wait_until
from tests.test_migrations import ENSURE_SUPABASE_ROLES
from tests.test_security import as_user

login_role = test_security.login_role

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
ADMIN = {"ops": {"password": "correct-horse", "role": "admin"}, "viewer": {"password": "battery-staple"}}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@asynccontextmanager
async def dashboard(
    db_url: str, *, client_host: str = "127.0.0.1", host: str = "127.0.0.1:9180", **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The dashboard app with its lifespan running, and a client that reaches it as a browser on
    `client_host` asking for `host` would."""
    app = create_app(make_settings(db_url, dashboard_refresh_interval=0.2, **overrides))
    transport = httpx.ASGITransport(app=app, client=(client_host, 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=f"http://{host}", headers={"host": host}) as client,
    ):
        yield client, app


async def csrf_of(client: httpx.AsyncClient, path: str = "/jobs", **kwargs: Any) -> str:
    page = await client.get(path, **kwargs)
    assert page.status_code == 200, page.text
    match = CSRF.search(page.text)
    assert match, "the page has no CSRF field"
    return match.group(1)


async def post(client: httpx.AsyncClient, path: str, data: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return await client.post(path, data={"csrf": await csrf_of(client, **kwargs), **data}, **kwargs)


async def dead_job(client: AsyncClient, conn: asyncpg.Connection, job_type: str = "flaky", **columns: Any) -> int:
    job_id = await client.enqueue(job_type, columns.pop("payload", {}), **columns)
    await conn.execute(
        "UPDATE background_jobs SET status = 'dead', attempts = max_attempts, finished_at = now(),"
        " last_error = 'boom', last_error_traceback = 'Traceback (most recent call last): boom' WHERE id = $1",
        job_id,
    )
    return job_id


# -- pages -----------------------------------------------------------------------------------


async def test_every_page_renders_the_queue(db_url: str, conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    pending = await client.enqueue("send_email", {"to": "a@example.com"}, queue="emails")
    dead = await dead_job(client, conn)
    await conn.execute(
        "INSERT INTO jobrunner_schedules (name, definition) VALUES ('nightly', $1)",
        json.dumps({"cron": "0 3 * * *", "job_type": "cleanup", "timezone": "UTC"}),
    )
    async with dashboard(db_url) as (http, _app):
        overview = await http.get("/")
        assert overview.status_code == 200
        assert "emails" in overview.text and "send_email" in overview.text and "flaky" in overview.text
        listing = await http.get("/jobs")
        assert f'href="/jobs/{pending}"' in listing.text and f'href="/jobs/{dead}"' in listing.text
        detail = await http.get(f"/jobs/{dead}")
        assert "Traceback (most recent call last): boom" in detail.text and 'data-testid="job-retry"' in detail.text
        assert "nightly" in (await http.get("/schedules")).text
        assert (await http.get("/audit")).status_code == 200
        missing = await http.get("/jobs/999999")
        assert missing.status_code == 404 and "there is no job 999999" in missing.text
        static = await http.get("/static/htmx.min.js")
        assert static.status_code == 200 and "htmx" in static.text


async def test_the_overview_counts_blocked_jobs_by_queue_and_type(db_url: str, conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    parent = await client.enqueue("analyze_photo", {}, queue="photos")
    for user in ("u1", "u2"):
        await client.enqueue("recommend", {"user": user}, queue="tips", depends_on=[parent])
    # a dependent cancelled by hand keeps its edge until the parent finishes: not blocked
    cancelled = await client.enqueue("recommend", {"user": "u3"}, queue="tips", depends_on=[parent])
    await client.cancel(cancelled)
    async with dashboard(db_url) as (http, _app):
        overview = (await http.get("/")).text
    assert 'data-testid="blocked-tips">2</td>' in overview
    assert 'data-testid="blocked-photos">0</td>' in overview
    assert 'data-testid="blocked-type-recommend">2</td>' in overview
    assert 'data-testid="blocked-type-analyze_photo">0</td>' in overview


async def test_a_jobs_page_shows_how_often_it_snoozed(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await AsyncClient(conn).enqueue("poll_upstream", {})
    await conn.execute("UPDATE background_jobs SET snoozes = 3 WHERE id = $1", job_id)
    async with dashboard(db_url) as (http, _app):
        detail = (await http.get(f"/jobs/{job_id}")).text
    assert '<dt>snoozes</dt><dd id="snoozes">3</dd>' in detail


async def test_values_from_job_rows_render_as_text_and_redacted_keys_are_hidden(
    db_url: str, conn: asyncpg.Connection
) -> None:
    client = AsyncClient(conn)
    xss = "<script>alert('xss')</script>"
    job_id = await client.enqueue(xss, {"html": xss, "api_token": "s3cr3t-value", "nested": [{"Api_Token": "x"}]})
    await conn.execute(
        "UPDATE background_jobs SET status = 'dead', finished_at = now(), last_error = $2, queue = $3 WHERE id = $1",
        job_id,
        f'"><img src=x onerror=alert(1)>{xss}',
        "q<b>",
    )
    async with dashboard(db_url, dashboard_redact_keys=["API_TOKEN"]) as (http, _app):
        for path in ("/", "/jobs", f"/jobs/{job_id}", "/jobs?status=dead"):
            page = await http.get(path)
            assert "<script>alert" not in page.text and "<img src=x" not in page.text and "<b>" not in page.text
        detail = (await http.get(f"/jobs/{job_id}")).text
        assert "&lt;script&gt;alert(" in detail and "&lt;img src=x onerror=alert(1)&gt;" in detail
        assert "s3cr3t-value" not in detail and detail.count("[redacted]") == 2


async def test_every_response_carries_the_security_headers(db_url: str) -> None:
    async with dashboard(db_url) as (http, _app):
        for path in ("/", "/jobs", "/static/dashboard.js", "/jobs/1"):
            response = await http.get(path)
            policy = response.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
            assert "frame-ancestors 'none'" in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "same-origin"
            assert response.headers["cache-control"] == "no-store"
        page = (await http.get("/")).text
        assert "<script>" not in page and " on" + "click=" not in page, "inline script in a page"


# -- the job list ----------------------------------------------------------------------------


def listed_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'<tr data-job="(\d+)">', html)]


def next_page(html: str) -> str | None:
    found = re.search(r'<a rel="next" href="([^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found else None


async def test_the_job_list_pages_by_id_and_filters(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO background_jobs (job_type, queue, priority, dedupe_key)"
        " SELECT CASE WHEN g % 3 = 0 THEN 'resize' ELSE 'email' END, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END,"
        " g % 5, 'key-' || g FROM generate_series(1, 130) AS g"
    )
    async with dashboard(db_url) as (http, _app):
        seen: list[int] = []
        url: str | None = "/jobs"
        while url is not None:
            html = (await http.get(url)).text
            seen += listed_ids(html)
            url = next_page(html)
        assert seen == list(range(130, 0, -1))

        html = (await http.get("/jobs?job_type=resize&queue=a&priority_min=1&priority_max=3")).text
        expected = [g for g in range(130, 0, -1) if g % 3 == 0 and g % 2 == 0 and 1 <= g % 5 <= 3]
        assert listed_ids(html) == expected
        assert listed_ids((await http.get("/jobs?key=key-7")).text) == [7]
        assert listed_ids((await http.get("/jobs?status=running")).text) == []
        bad = await http.get("/jobs?status=nonsense&priority_min=x&created_from=yesterday")
        assert bad.status_code == 200 and "unknown status" in bad.text and "not a whole number" in bad.text


async def test_the_error_filter_takes_the_operators_text_literally(db_url: str, conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    literal = await dead_job(client, conn)
    other = await dead_job(client, conn)
    await conn.execute("UPDATE background_jobs SET last_error = '100% broken_here' WHERE id = $1", literal)
    await conn.execute("UPDATE background_jobs SET last_error = '100 x brokenXhere' WHERE id = $1", other)
    async with dashboard(db_url) as (http, _app):
        assert listed_ids((await http.get("/jobs?error=0%25+broken_h")).text) == [literal]
        assert listed_ids((await http.get("/jobs?error=BROKEN")).text) == [other, literal]


async def test_a_filter_no_index_serves_reads_a_window_of_ids_per_page(
    db_url: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filters, "SCAN_WINDOW", 40)
    monkeypatch.setattr("jobrunner.dashboard.store.SCAN_WINDOW", 40)
    await conn.execute("INSERT INTO background_jobs (job_type) SELECT 'common' FROM generate_series(1, 100)")
    await conn.execute("UPDATE background_jobs SET job_type = 'rare' WHERE id IN (5, 95)")
    async with dashboard(db_url) as (http, _app):
        first = (await http.get("/jobs?job_type=rare")).text
        assert listed_ids(first) == [95]
        assert "looked at job ids from 61 up" in first
        second = (await http.get(next_page(first) or "")).text
        assert listed_ids(second) == [] and "from 21 up" in second
        third = (await http.get(next_page(second) or "")).text
        assert listed_ids(third) == [5] and next_page(third) is None


# -- actions ---------------------------------------------------------------------------------


async def audit_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM jobrunner_audit ORDER BY id")
    return [dict(row) | {"target": json.loads(row["target"])} for row in rows]


async def test_each_action_on_chosen_jobs_is_done_and_audited(db_url: str, conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    dead = [await dead_job(client, conn) for _ in range(2)]
    pending = await client.enqueue("later", delay=3600)
    async with dashboard(db_url) as (http, _app):
        done = await post(http, "/jobs/act", {"action": "retry", "job": dead, "next": "/jobs?status=dead"})
        assert done.status_code == 303
        assert re.fullmatch(r"/jobs\?status=dead&done=\d+", done.headers["location"])
        after = await conn.fetch("SELECT status, attempts, finished_at FROM background_jobs WHERE id = ANY($1)", dead)
        assert [(r["status"], r["attempts"], r["finished_at"]) for r in after] == [("pending", 0, None)] * 2
        notice = (await http.get(done.headers["location"])).text
        assert "retry: 2 of 2 changed" in notice

        assert (
            await post(http, "/jobs/act", {"action": "set_priority", "priority": "7", "job": pending})
        ).status_code == 303
        assert await conn.fetchval("SELECT priority FROM background_jobs WHERE id = $1", pending) == 7
        await post(http, "/jobs/act", {"action": "run_now", "job": pending})
        assert await conn.fetchval("SELECT scheduled_at <= now() FROM background_jobs WHERE id = $1", pending)
        await post(http, "/jobs/act", {"action": "cancel", "job": pending})
        assert await conn.fetchval("SELECT status FROM background_jobs WHERE id = $1", pending) == "cancelled"
        await post(http, "/jobs/act", {"action": "delete", "job": [pending, *dead]})
        assert await conn.fetchval("SELECT count(*) FROM background_jobs") == 0

        refused = await post(http, "/jobs/act", {"action": "set_priority", "priority": "high", "job": pending})
        assert refused.status_code == 400 and "whole number" in refused.text
        assert (await post(http, "/jobs/act", {"action": "explode", "job": pending})).status_code == 400
        assert (await post(http, "/jobs/act", {"action": "retry"})).status_code == 400

    rows = await audit_rows(conn)
    assert [(r["action"], r["affected"], r["requested"]) for r in rows] == [
        ("retry", 2, 2),
        ("set_priority", 1, 1),
        ("run_now", 1, 1),
        ("cancel", 1, 1),
        ("delete", 3, 3),
    ]
    assert rows[0]["target"] == {"jobs": sorted(dead)} and rows[1]["target"]["priority"] == 7
    assert all(r["actor"] == "local@127.0.0.1" and r["via"] == "dashboard" and r["finished_at"] for r in rows)


async def test_a_retry_leaves_a_job_whose_dedupe_key_a_live_job_holds(db_url: str, conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    blocked = await dead_job(client, conn, dedupe_key="report-1")
    free = await dead_job(client, conn, dedupe_key="report-2")
    await client.enqueue("flaky", dedupe_key="report-1")  # the live holder of the key
    async with dashboard(db_url) as (http, _app):
        done = await post(http, "/jobs/act", {"action": "retry", "job": [blocked, free]})
        assert "dedupe key" in (await http.get(done.headers["location"])).text
    statuses = dict(await conn.fetch("SELECT id, status FROM background_jobs WHERE id = ANY($1)", [blocked, free]))
    assert statuses == {blocked: "dead", free: "pending"}
    [row] = await audit_rows(conn)
    assert (row["affected"], row["requested"]) == (1, 2) and "dedupe key" in row["detail"]


async def test_a_bulk_retry_changes_what_was_counted_in_batches(db_url: str, conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    dead = [await dead_job(client, conn, "flaky") for _ in range(7)]
    other_type = await dead_job(client, conn, "other")
    async with dashboard(db_url, dashboard_bulk_batch=2) as (http, _app):
        confirm = await http.get("/jobs/bulk?action=retry&status=dead&job_type=flaky")
        assert "Retry 7 job(s)?" in confirm.text
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', confirm.text))
        assert fields["confirmed"] == "7" and fields["job_type"] == "flaky" and fields["status"] == "dead"
        late = await dead_job(client, conn, "flaky")  # after the count: not touched
        started = await http.post("/jobs/bulk", data=fields)
        assert started.status_code == 303 and started.headers["location"].startswith("/audit/")
        await wait_for(conn, "SELECT finished_at IS NOT NULL FROM jobrunner_audit")
        entry = (await http.get(started.headers["location"])).text
        assert re.search(r'id="affected">7<', entry) and "finished" in entry
    statuses = dict(await conn.fetch("SELECT id, status FROM background_jobs"))
    assert [statuses[i] for i in dead] == ["pending"] * 7
    assert statuses[other_type] == "dead" and statuses[late] == "dead"
    [row] = await audit_rows(conn)
    assert (row["action"], row["requested"], row["affected"]) == ("retry", 7, 7)
    assert row["target"]["filter"] == {"status": ["dead"], "job_type": "flaky"}


async def test_pausing_and_resuming_a_queue_from_the_overview(db_url: str, conn: asyncpg.Connection) -> None:
    async with dashboard(db_url) as (http, _app):
        paused = await post(
            http,
            "/queues/pause",
            {"queue": "emails", "reason": "provider down", "next": "/"},
        )
        assert paused.status_code == 303
        assert (
            await conn.fetchval("SELECT reason FROM jobrunner_queue_pauses WHERE queue = 'emails'") == "provider down"
        )
        overview = (await http.get("/")).text
        assert 'data-testid="resume-emails"' in overview and "paused" in overview
        await post(http, "/queues/resume", {"queue": "emails"})
        assert await conn.fetchval("SELECT count(*) FROM jobrunner_queue_pauses") == 0
    assert [r["action"] for r in await audit_rows(conn)] == ["pause_queue", "resume_queue"]


async def test_running_a_schedule_now_enqueues_its_job(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO jobrunner_schedules (name, definition) VALUES ('nightly', $1)",
        json.dumps({"cron": "0 3 * * *", "job_type": "cleanup", "payload": {"days": 30}, "queue": "maintenance"}),
    )
    async with dashboard(db_url) as (http, _app):
        done = await post(http, "/schedules/run", {"name": "nightly", "next": "/schedules"})
        assert done.status_code == 303
        assert (await post(http, "/schedules/run", {"name": "nope"})).status_code == 404
    job = await conn.fetchrow("SELECT job_type, payload, queue FROM background_jobs")
    assert (job["job_type"], json.loads(job["payload"]), job["queue"]) == ("cleanup", {"days": 30}, "maintenance")
    assert await conn.fetchval("SELECT last_tick FROM jobrunner_schedules") is None


# -- who may do what -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_host", "host"),
    [("10.1.2.3", "127.0.0.1:9180"), ("127.0.0.1", "evil.example:9180"), ("127.0.0.1", "192.168.1.5")],
    ids=["remote client", "rebound host name", "lan address"],
)
async def test_without_users_only_this_machine_may_use_it(db_url: str, client_host: str, host: str) -> None:
    async with dashboard(db_url, client_host=client_host, host=host) as (http, _app):
        response = await http.get("/")
        assert response.status_code == 403 and "only this machine" in response.text
    async with dashboard(db_url, host="localhost:9180") as (http, _app):
        assert (await http.get("/")).status_code == 200


async def test_logins_and_tokens_with_their_roles(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await dead_job(AsyncClient(conn), conn)
    async with dashboard(
        db_url,
        client_host="10.1.2.3",
        host="jobs.example",
        dashboard_users=ADMIN,
        dashboard_read_token="read-token-0123456789",
    ) as (http, _app):
        anonymous = await http.get("/")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
        assert (await http.get("/", headers=basic("ops", "wrong"))).status_code == 401
        assert (await http.get("/", headers=basic("nobody", "correct-horse"))).status_code == 401
        assert (await http.get("/", headers={"Authorization": "Bearer nope"})).status_code == 401

        reader = basic("viewer", "battery-staple")
        page = await http.get(f"/jobs/{job_id}", headers=reader)
        assert page.status_code == 200 and 'data-testid="job-retry"' not in page.text
        refused = await post(http, "/jobs/act", {"action": "retry", "job": job_id}, headers=reader)
        assert refused.status_code == 403 and "role read" in refused.text
        token_reader = {"Authorization": "Bearer read-token-0123456789"}
        assert (
            await post(http, "/jobs/act", {"action": "retry", "job": job_id}, headers=token_reader)
        ).status_code == 403
        assert await conn.fetchval("SELECT status FROM background_jobs") == "dead"

        admin = basic("ops", "correct-horse")
        assert (await post(http, "/jobs/act", {"action": "retry", "job": job_id}, headers=admin)).status_code == 303
        assert await conn.fetchval("SELECT status FROM background_jobs") == "pending"
    [row] = await audit_rows(conn)
    assert row["actor"] == "ops"


@pytest.mark.process
def test_it_refuses_to_listen_beyond_loopback_without_authentication() -> None:
    open_settings = Settings(database_url="postgresql://x@127.0.0.1/db")
    assert AccessPolicy(open_settings).refusal_to_bind("127.0.0.1") is None
    assert AccessPolicy(open_settings).refusal_to_bind("::1") is None
    assert AccessPolicy(open_settings).refusal_to_bind("localhost") is None
    for host in ("0.0.0.0", "::", "10.0.0.5", "jobs.example"):
        assert "not loopback" in (AccessPolicy(open_settings).refusal_to_bind(host) or ""), host
    secured = Settings(database_url="postgresql://x@127.0.0.1/db", dashboard_token="t0ken-value-0123456789")
    assert AccessPolicy(secured).refusal_to_bind("0.0.0.0") is None
    assert is_loopback_host("127.0.0.2") and is_loopback_host("[::1]") and not is_loopback_host("127.example")

    command = subprocess.run(
        [sys.executable, "-m", "jobrunner", "dashboard", "--host", "0.0.0.0", "--port", "0"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "DATABASE_URL": "postgresql://x@127.0.0.1/db"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert command.returncode == 2 and "JOBRUNNER_DASHBOARD_USERS" in command.stderr


@pytest.mark.parametrize(
    "forge",
    [
        lambda data, headers: (data | {"csrf": ""}, headers),
        lambda data, headers: (data | {"csrf": "0" * 64}, headers),
        lambda data, headers: (data, headers | {"Sec-Fetch-Site": "cross-site"}),
        lambda data, headers: (data, headers | {"Origin": "http://evil.example"}),
        lambda data, headers: (data, headers | {"Origin": "null"}),
    ],
    ids=["no token", "wrong token", "cross-site fetch", "foreign origin", "opaque origin"],
)
async def test_an_action_without_proof_of_its_page_is_refused(
    db_url: str,
    conn: asyncpg.Connection,
    forge: Callable[[dict[str, Any], dict[str, str]], tuple[dict[str, Any], dict[str, str]]],
) -> None:
    job_id = await dead_job(AsyncClient(conn), conn)
    async with dashboard(db_url) as (http, _app):
        data = {"csrf": await csrf_of(http), "action": "retry", "job": job_id}
        sent, headers = forge(data, {"Origin": "http://127.0.0.1:9180", "Sec-Fetch-Site": "same-origin"})
        response = await http.post("/jobs/act", data=sent, headers=headers)
        assert response.status_code == 403
        # the same form with its proof goes through
        valid = await http.post("/jobs/act", data=data, headers={"Origin": "http://127.0.0.1:9180"})
        assert valid.status_code == 303
    assert [r["action"] for r in await audit_rows(conn)] == ["retry"]


async def test_a_post_from_a_fresh_browser_without_the_cookie_is_refused(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await dead_job(AsyncClient(conn), conn)
    async with dashboard(db_url) as (http, _app):
        token = await csrf_of(http)
        http.cookies.clear()
        assert (await http.post("/jobs/act", data={"csrf": token, "action": "retry", "job": job_id})).status_code == 403


# -- mounted under a prefix, live updates ------------------------------------------------------


async def test_mounted_under_a_prefix_its_links_and_redirects_keep_it(db_url: str, conn: asyncpg.Connection) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    job_id = await dead_job(AsyncClient(conn), conn)
    inner = create_app(make_settings(db_url))
    outer = Starlette(routes=[Mount("/ops/jobs", app=inner)])
    transport = httpx.ASGITransport(app=outer, client=("127.0.0.1", 50000))
    async with (
        inner.router.lifespan_context(inner),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http,
    ):
        page = await http.get("/ops/jobs/jobs")
        assert page.status_code == 200 and f'href="/ops/jobs/jobs/{job_id}"' in page.text
        assert 'src="/ops/jobs/static/htmx.min.js"' in page.text
        token = CSRF.search(page.text)
        assert token
        done = await http.post(
            "/ops/jobs/jobs/act", data={"csrf": token.group(1), "action": "retry", "job": job_id, "next": "/elsewhere"}
        )
        assert done.status_code == 303 and done.headers["location"].startswith("/ops/jobs/?done=")


async def test_the_live_stream_says_when_something_changed(db_url: str, conn: asyncpg.Connection) -> None:
    async with dashboard(db_url) as (_http, app):
        feed = app.state.runtime.feed
        stream = feed.events()
        assert await anext(stream) == "retry: 5000\n\n"
        # the watcher reads the marker once before anything can differ from it
        deadline = time.monotonic() + 10
        while feed.checks == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await AsyncClient(conn).enqueue("noop")
        event = await asyncio.wait_for(anext(stream), 10)
        assert event == "event: change\ndata: change\n\n"
        await conn.execute("UPDATE background_jobs SET status = 'running', attempts = 1")  # a claim: no NOTIFY
        assert await asyncio.wait_for(anext(stream), 10) == event
        await stream.aclose()
        checks = feed.checks
        await asyncio.sleep(0.5)
        assert feed.checks <= checks + 1, "the watcher kept reading with no page open"


async def test_after_the_demo_the_dashboard_shows_the_demos_schema(empty_db_url: str, db_url: str) -> None:
    from jobrunner.dashboard.serve import _choose_schema
    from jobrunner.demo import DEMO_SCHEMA
    from jobrunner.dsn import parse_database_url
    from jobrunner.migrate import migrate

    embedded = Settings(database_url=None)  # as on the embedded server, no schema chosen
    assert await _choose_schema(parse_database_url(db_url), embedded) == "public"
    conn = await asyncpg.connect(empty_db_url)
    try:
        await migrate(conn, DEMO_SCHEMA)
    finally:
        await conn.close()
    url = parse_database_url(empty_db_url)
    assert await _choose_schema(url, embedded) == DEMO_SCHEMA
    # a schema chosen, or a database configured: no guessing
    assert await _choose_schema(url, Settings(database_url=None, schema_name="public")) is None
    assert await _choose_schema(url, Settings(database_url=empty_db_url)) is None


async def test_the_live_counts_are_reused_for_a_while_not_recounted_for_every_page(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    from jobrunner.dashboard.store import DashboardStore

    client = AsyncClient(conn)
    await client.enqueue("noop")
    store = DashboardStore(pool, "public", live_min_age=3600)
    assert [q.pending for q in (await store.overview()).queues] == [1]
    await client.enqueue("noop")
    assert [q.pending for q in (await store.overview()).queues] == [1]  # reused
    fresh = DashboardStore(pool, "public", live_min_age=0)
    assert [q.pending for q in (await fresh.overview()).queues] == [2]


async def test_an_action_goes_back_to_its_page_and_only_to_a_page_of_the_dashboard(
    db_url: str, conn: asyncpg.Connection
) -> None:
    job_id = await dead_job(AsyncClient(conn), conn)
    async with dashboard(db_url) as (http, _app):
        back = await post(http, "/jobs/act", {"action": "retry", "job": job_id, "next": "/jobs?status=dead&done=1"})
        location = back.headers["location"]
        assert location.startswith("/jobs?status=dead&done=") and location.count("done=") == 1
        for elsewhere in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "jobs"):
            await conn.execute("UPDATE background_jobs SET status = 'dead' WHERE id = $1", job_id)
            away = await post(http, "/jobs/act", {"action": "retry", "job": job_id, "next": elsewhere})
            assert away.headers["location"].startswith("/?done="), elsewhere


async def test_a_creation_time_range_starts_the_list_at_its_ids(
    db_url: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a day of jobs, one a minute, behind a window far smaller than the day: the page does not
    # walk down from the newest job to the range, it starts there (a binary search over the ids)
    monkeypatch.setattr("jobrunner.dashboard.store.SCAN_WINDOW", 100)
    await conn.execute(
        "INSERT INTO background_jobs (job_type, created_at)"
        " SELECT 'noop', '2026-01-01 00:00+00'::timestamptz + make_interval(mins => g)"
        " FROM generate_series(0, 1439) AS g ORDER BY g"
    )
    async with dashboard(db_url) as (http, _app):
        html = (await http.get("/jobs?created_from=2026-01-01T10:00&created_before=2026-01-01T10:05")).text
        # jobs 601..605 were created at 10:00..10:04
        assert listed_ids(html) == [605, 604, 603, 602, 601] and next_page(html) is None
        assert listed_ids((await http.get("/jobs?created_from=2026-01-02T00:00")).text) == []
        early = (await http.get("/jobs?created_before=2026-01-01T00:03")).text
        assert listed_ids(early) == [3, 2, 1]
    first = "SELECT min(id) FROM background_jobs WHERE created_at >= $1"
    from jobrunner.sql_files import Queries

    search = Queries("public").dashboard_first_id_created_at
    for text in ("2025-12-31T23:00", "2026-01-01T00:00", "2026-01-01T13:37:30", "2026-01-01T23:59"):
        moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
        assert await conn.fetchval(search, moment) == await conn.fetchval(first, moment), text
    assert await conn.fetchval(search, datetime(2026, 1, 2, tzinfo=UTC)) is None
    await conn.execute("DELETE FROM background_jobs WHERE id BETWEEN 500 AND 900")  # a gap in the ids
    assert await conn.fetchval(search, datetime(2026, 1, 1, 10, tzinfo=UTC)) == 901


async def test_a_flood_of_forged_wakeups_costs_the_live_watcher_a_bounded_number_of_reads(
    db_url: str, conn: asyncpg.Connection, login_role: Any
) -> None:
    # any role that can log in may NOTIFY on the dashboard's channel: a hint brings the next read
    # of the change marker no closer than half the refresh interval (0.2 s here), so a flood
    # costs at most one read per 0.1 s however many notifications arrive, and real changes
    # are still told at once
    await conn.execute(ENSURE_SUPABASE_ROLES)
    attacker = await asyncpg.connect(as_user(db_url, await login_role("authenticated")))
    try:
        async with dashboard(db_url) as (_http, app):
            feed = app.state.runtime.feed
            stream = feed.events()
            assert await anext(stream) == "retry: 5000\n\n"
            await wait_until(lambda: feed.checks > 0, what="the watcher's first read")
            before, started = feed.checks, time.monotonic()
            while time.monotonic() - started < 1.0:
                await attacker.execute("SELECT pg_notify('jobrunner_public', 'default') FROM generate_series(1, 20)")
            flooded_for = time.monotonic() - started
            reads = feed.checks - before
            print(f"{reads} marker reads in a {flooded_for:.2f}s flood")
            assert reads <= flooded_for / 0.1 + 3
            await AsyncClient(conn).enqueue("noop")
            assert await asyncio.wait_for(anext(stream), 10) == "event: change\ndata: change\n\n"
            await stream.aclose()
    finally:
        await attacker.close()
