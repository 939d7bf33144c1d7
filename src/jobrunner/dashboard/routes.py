"""The dashboard's pages and actions.

Every page is whole HTML that reads and works without JavaScript: filters are GET forms, actions
are POST forms (each with its CSRF field), answered with a redirect back to the page, which
names the audit row of what was done. With JavaScript, htmx re-reads the live part of a page
(`#live`) when the event stream says something changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from jobrunner.audit import Actor, record_action
from jobrunner.dashboard import actions
from jobrunner.dashboard.csrf import COOKIE, FIELD
from jobrunner.dashboard.filters import STATUSES, JobFilter
from jobrunner.dashboard.guard import viewer_of
from jobrunner.dashboard.store import DashboardStore
from jobrunner.queue_pauses import InvalidQueueName, pause_queue, resume_queue
from jobrunner.statements import run

if TYPE_CHECKING:
    from jobrunner.dashboard.app import Runtime

MAX_FORM_BYTES = 64 * 1024

Form = dict[str, list[str]]


class Refused(Exception):
    """A request the dashboard answers with a page saying why, nothing changed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _store(request: Request) -> DashboardStore:
    store: DashboardStore | None = _runtime(request).store
    if store is None:
        raise RuntimeError("the dashboard's lifespan has not run: see jobrunner.dashboard.app on mounting it")
    return store


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _params(request: Request) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        found.setdefault(name, []).append(value)
    return found


def _first(values: Mapping[str, list[str]], name: str) -> str | None:
    found = values.get(name) or []
    return found[0] if found else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    runtime = _runtime(request)
    cookie = request.cookies.get(COOKIE)
    new_cookie = None
    if not cookie:
        cookie = new_cookie = runtime.csrf.new_cookie()
    notice = None
    done = _int(request.query_params.get("done"))
    if done is not None:
        notice = await _store(request).audit_entry(done)
    html = runtime.templates.get_template(template).render(
        base=_base(request),
        here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        viewer=viewer_of(request.scope),
        csrf=runtime.csrf.token_for(cookie),
        csrf_field=FIELD,
        now=datetime.now(UTC),
        schema=runtime.schema,
        notice=notice,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if new_cookie is not None:
        response.set_cookie(
            COOKIE,
            new_cookie,
            path=_base(request) or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


async def _refusal(request: Request, exc: Refused) -> HTMLResponse:
    return await render(request, "refused.html", status=exc.status, message=str(exc), page="")


async def read_form(request: Request) -> Form:
    """An action's form, once the viewer may act and the CSRF checks passed."""
    if not viewer_of(request.scope).may_act:
        raise Refused("your login may look but not change anything (role read)", 403)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise Refused("expected a form", 415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused("the form is too large", 413)
    try:
        form = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused("the form cannot be read") from exc
    refusal = _runtime(request).csrf.refusal(
        request.cookies.get(COOKIE),
        _first(form, FIELD),
        request.headers.get("origin"),
        request.headers.get("sec-fetch-site"),
        request.headers.get("host"),
    )
    if refusal is not None:
        raise Refused(refusal, 403)
    return form


def _back(request: Request, form: Form, audit_id: int | None = None) -> RedirectResponse:
    """Back to the page the form was on (only a page of this dashboard), naming what was done."""
    base = _base(request)
    target = _first(form, "next") or f"{base}/"
    if not target.startswith(f"{base}/") or target.startswith("//") or "\\" in target:
        target = f"{base}/"
    path, _, query = target.partition("?")
    # the page's own query, without the notice of an earlier action
    pairs = [(name, value) for name, value in parse_qsl(query, keep_blank_values=True) if name != "done"]
    if audit_id is not None:
        pairs.append(("done", str(audit_id)))
    return RedirectResponse(f"{path}?{urlencode(pairs)}" if pairs else path, status_code=303)


def _actor(request: Request) -> Actor:
    return Actor(viewer_of(request.scope).name, "dashboard")


# -- pages -----------------------------------------------------------------------------------


async def overview(request: Request) -> Response:
    summary = await _store(request).overview()
    return await render(request, "overview.html", overview=summary, page="overview")


async def jobs(request: Request) -> Response:
    job_filter = JobFilter.from_params(_params(request))
    cursor = _int(request.query_params.get("before"))
    page = await _store(request).jobs_page(job_filter, cursor)
    return await render(
        request,
        "jobs.html",
        page="jobs",
        filter=job_filter,
        jobs_page=page,
        cursor=cursor,
        statuses=STATUSES,
        actions=actions.ACTIONS,
    )


async def job(request: Request) -> Response:
    job_id = int(request.path_params["job_id"])
    row = await _store(request).job(job_id)
    if row is None:
        return await _refusal(request, Refused(f"there is no job {job_id}", 404))
    applicable = [action for action in actions.ACTIONS.values() if row["status"] in action.statuses]
    parents, waiting = await _store(request).job_flow(row)
    return await render(
        request, "job.html", page="jobs", job=row, applicable=applicable, parents=parents, waiting=waiting
    )


async def schedules(request: Request) -> Response:
    now, views = await _store(request).schedules()
    return await render(request, "schedules.html", page="schedules", schedules=views, db_now=now)


async def audit(request: Request) -> Response:
    cursor = _int(request.query_params.get("before"))
    rows, next_cursor = await _store(request).audit_page(cursor)
    return await render(request, "audit.html", page="audit", rows=rows, next_cursor=next_cursor, cursor=cursor)


async def audit_entry(request: Request) -> Response:
    audit_id = int(request.path_params["audit_id"])
    row = await _store(request).audit_entry(audit_id)
    if row is None:
        return await _refusal(request, Refused(f"there is no audit entry {audit_id}", 404))
    return await render(request, "audit_entry.html", page="audit", entry=row, target=json.loads(row["target"]))


async def confirm_bulk(request: Request) -> Response:
    params = _params(request)
    try:
        action = actions.action_named(_first(params, "action") or "")
        job_filter = JobFilter.from_params(params)
        if job_filter.problems:
            raise Refused("the filter cannot be read: " + "; ".join(job_filter.problems))
        count, upper_id = await actions.count_matching(
            _store(request).pool, _store(request).action_statements, action, job_filter
        )
    except (Refused, actions.ActionRefused) as exc:
        return await _refusal(request, exc if isinstance(exc, Refused) else Refused(str(exc)))
    return await render(
        request, "confirm.html", page="jobs", action=action, filter=job_filter, count=count, upper_id=upper_id
    )


async def events(request: Request) -> Response:
    feed = _runtime(request).feed
    if feed is None:
        raise RuntimeError("the dashboard's lifespan has not run: see jobrunner.dashboard.app on mounting it")
    return StreamingResponse(feed.events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


# -- actions ---------------------------------------------------------------------------------


async def act(request: Request) -> Response:
    try:
        form = await read_form(request)
        action = actions.action_named(_first(form, "action") or "")
        priority = actions.checked_priority(action, _first(form, "priority"))
        ids = [job_id for value in form.get("job", []) if (job_id := _int(value)) is not None]
        store = _store(request)
        _applied, audit_id = await actions.act_on_jobs(
            store.pool, store.action_statements, store.operator, _actor(request), action, ids, priority
        )
    except actions.ActionRefused as exc:
        return await _refusal(request, Refused(str(exc)))
    except Refused as exc:
        return await _refusal(request, exc)
    return _back(request, form, audit_id)


async def start_bulk(request: Request) -> Response:
    try:
        form = await read_form(request)
        action = actions.action_named(_first(form, "action") or "")
        priority = actions.checked_priority(action, _first(form, "priority"))
        job_filter = JobFilter.from_params(form)
        upper_id = _int(_first(form, "upper_id"))
        confirmed = _int(_first(form, "confirmed"))
        if job_filter.problems or upper_id is None or confirmed is None:
            raise Refused("the confirmation cannot be read: go back to the job list and try again")
        runtime = _runtime(request)
        store = _store(request)
        audit_id, task = await actions.start_bulk(
            store.pool,
            store.action_statements,
            store.operator,
            _actor(request),
            action,
            job_filter,
            upper_id=upper_id,
            confirmed=confirmed,
            priority=priority,
            batch=runtime.settings.dashboard_bulk_batch,
        )
        runtime.keep(task)
    except actions.ActionRefused as exc:
        return await _refusal(request, Refused(str(exc)))
    except Refused as exc:
        return await _refusal(request, exc)
    return RedirectResponse(f"{_base(request)}/audit/{audit_id}", status_code=303)


async def _queue_action(request: Request, pausing: bool) -> Response:
    try:
        form = await read_form(request)
        queue = _first(form, "queue") or ""
        store = _store(request)
        async with store.pool.acquire() as conn:
            if pausing:
                await pause_queue(conn, store.operator, queue, _actor(request), _first(form, "reason"))
            else:
                await resume_queue(conn, store.operator, queue, _actor(request))
    except InvalidQueueName as exc:
        return await _refusal(request, Refused(str(exc)))
    except Refused as exc:
        return await _refusal(request, exc)
    return _back(request, form)


async def pause(request: Request) -> Response:
    return await _queue_action(request, True)


async def resume(request: Request) -> Response:
    return await _queue_action(request, False)


async def run_schedule(request: Request) -> Response:
    try:
        form = await read_form(request)
        name = _first(form, "name") or ""
        store = _store(request)
        schedule = await store.schedule(name)
        if schedule is None:
            raise Refused(f"there is no schedule {name[:200]!r}", 404)
        async with store.pool.acquire() as conn, conn.transaction():
            job_id = await run(
                conn,
                store.schedule_statements.enqueue_job(
                    schedule.job_type,
                    schedule.payload,
                    schedule.queue,
                    schedule.priority,
                    schedule.max_attempts,
                    None,
                ),
            )
            audit_id = await record_action(
                conn, store.operator, _actor(request), "run_schedule", {"schedule": name, "job": job_id}, affected=1
            )
    except Refused as exc:
        return await _refusal(request, exc)
    return _back(request, form, audit_id)
