"""The dashboard as an ASGI application: `create_app(settings)`.

Standalone, `jobrunner dashboard` serves it with uvicorn. Inside an existing Starlette or
FastAPI application, mount it under a prefix and run its lifespan within yours (Starlette does
not run a mounted application's lifespan by itself):

    dashboard = create_app(Settings())

    @asynccontextmanager
    async def lifespan(app):
        async with dashboard.router.lifespan_context(dashboard):
            yield

    app = Starlette(routes=[Mount("/jobs", app=dashboard)], lifespan=lifespan)

It opens its own small connection pool (JOBRUNNER_DASHBOARD_POOL_SIZE) and one connection for
LISTEN; with no database URL configured, the embedded server, as every command does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources

import asyncpg
import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jobrunner.dashboard import routes
from jobrunner.dashboard.access import AccessPolicy
from jobrunner.dashboard.csrf import CsrfGuard
from jobrunner.dashboard.guard import Guard
from jobrunner.dashboard.live import LiveFeed
from jobrunner.dashboard.rendering import make_environment
from jobrunner.dashboard.store import DashboardStore
from jobrunner.database import DatabaseTarget, connect_kwargs
from jobrunner.settings import Settings

APPLICATION_NAME = "jobrunner dashboard"


@dataclass
class Runtime:
    """What the routes share: the settings, the store over the dashboard's pool, the live feed."""

    settings: Settings
    schema: str
    policy: AccessPolicy
    csrf: CsrfGuard
    templates: jinja2.Environment
    store: DashboardStore | None = None
    feed: LiveFeed | None = None
    bulk_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _target: DatabaseTarget | None = None
    _pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        s = self.settings
        self._target = DatabaseTarget(s)
        url, _listen = self._target.__enter__()
        kwargs = connect_kwargs(url, s.connect_timeout)
        # plans made with the filter's values, so that a filter left empty drops out and a status
        # filter can use its partial index; a statement that runs away is stopped; an action
        # does not queue behind a lock for long (the claims never wait on the dashboard: they
        # skip locked rows); no parallel workers. A transaction pooler takes no such startup
        # parameters.
        server_settings = {"application_name": APPLICATION_NAME}
        if not url.behind_pooler:
            server_settings |= {
                "plan_cache_mode": "force_custom_plan",
                "statement_timeout": "30s",
                "lock_timeout": "5s",
                # one core at most for a page's statement: parallel workers would take the
                # daemons' and the database's CPU to make a page faster
                "max_parallel_workers_per_gather": "0",
            }
        self._pool = await asyncpg.create_pool(
            **kwargs, min_size=1, max_size=s.dashboard_pool_size, server_settings=server_settings
        )
        self.store = DashboardStore(self._pool, self.schema, live_min_age=s.dashboard_refresh_interval / 2)
        self.feed = LiveFeed(self.store, url, s.dashboard_refresh_interval, s.connect_timeout)
        self.feed.start()

    async def close(self) -> None:
        for task in self.bulk_tasks:
            task.cancel()
        for task in list(self.bulk_tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.feed is not None:
            await self.feed.close()
        if self.store is not None:
            await self.store.close()
        if self._pool is not None:
            await self._pool.close()
        if self._target is not None:
            self._target.__exit__(None, None, None)

    def keep(self, task: asyncio.Task[None]) -> None:
        self.bulk_tasks.add(task)
        task.add_done_callback(self.bulk_tasks.discard)


def create_app(settings: Settings | None = None, *, schema: str | None = None) -> Starlette:
    """The dashboard for `settings` (default: read from the environment, as every command does),
    on `schema` (default: the settings' schema)."""
    settings = settings or Settings()
    runtime = Runtime(
        settings=settings,
        schema=schema or settings.schema_name,
        policy=AccessPolicy(settings),
        csrf=CsrfGuard(),
        templates=make_environment(settings.dashboard_redact_keys),
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.close()

    static = StaticFiles(directory=str(resources.files("jobrunner.dashboard") / "static"))
    app = Starlette(
        routes=[
            Route("/", routes.overview, name="overview"),
            Route("/jobs", routes.jobs, name="jobs"),
            Route("/jobs/{job_id:int}", routes.job, name="job"),
            Route("/jobs/act", routes.act, methods=["POST"], name="act"),
            Route("/jobs/bulk", routes.confirm_bulk, name="confirm_bulk"),
            Route("/jobs/bulk", routes.start_bulk, methods=["POST"], name="start_bulk"),
            Route("/queues/pause", routes.pause, methods=["POST"], name="pause"),
            Route("/queues/resume", routes.resume, methods=["POST"], name="resume"),
            Route("/schedules", routes.schedules, name="schedules"),
            Route("/schedules/run", routes.run_schedule, methods=["POST"], name="run_schedule"),
            Route("/audit", routes.audit, name="audit"),
            Route("/audit/{audit_id:int}", routes.audit_entry, name="audit_entry"),
            Route("/events", routes.events, name="events"),
            Mount("/static", app=static, name="static"),
        ],
        middleware=[Middleware(Guard, policy=runtime.policy)],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
