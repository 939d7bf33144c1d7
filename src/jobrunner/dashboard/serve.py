"""`jobrunner dashboard [--host H] [--port N]`: the dashboard on uvicorn, with the settings every
command uses, the embedded database included.

It refuses to listen on anything but loopback without users or a token. With no database
configured and no schema chosen, after `jobrunner demo`, it shows the demo's schema when the
default one holds no queue, so that a newcomer sees the demo's jobs.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import uvicorn

from jobrunner import event_loop
from jobrunner.dashboard.access import AccessPolicy
from jobrunner.dashboard.app import create_app
from jobrunner.database import DatabaseTarget, connect_kwargs
from jobrunner.demo import DEMO_SCHEMA
from jobrunner.dsn import DatabaseUrl
from jobrunner.settings import Settings
from jobrunner.sql_files import Queries

EXIT_OK = 0
EXIT_USAGE = 2


async def _schema_ready(url: DatabaseUrl, settings: Settings, schema: str) -> bool:
    conn = await asyncpg.connect(**connect_kwargs(url, settings.connect_timeout))
    try:
        return bool(await conn.fetchval(Queries(schema).dashboard_schema_ready))
    finally:
        await conn.close()


async def _choose_schema(url: DatabaseUrl, settings: Settings) -> str | None:
    """The schema to show: the configured one; the demo's after `jobrunner demo` on the embedded
    server when none was chosen and the default holds no queue. None: neither is migrated."""
    if await _schema_ready(url, settings, settings.schema_name):
        return settings.schema_name
    chose = "schema_name" in settings.model_fields_set
    if settings.database_url is None and not chose and await _schema_ready(url, settings, DEMO_SCHEMA):
        print(f"jobrunner dashboard: schema {settings.schema_name} holds no queue; showing the demo's ({DEMO_SCHEMA})")
        return DEMO_SCHEMA
    return None


async def _serve(settings: Settings, host: str, port: int) -> int:
    with DatabaseTarget(settings) as (url, _listen):
        schema = await _choose_schema(url, settings)
        if schema is None:
            print(
                f"jobrunner: schema {settings.schema_name} is not migrated (or lacks the dashboard's tables):"
                " run `jobrunner migrate` first",
                file=sys.stderr,
            )
            return EXIT_USAGE
        app = create_app(settings, schema=schema)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            # the client address is the peer's: a proxy's X-Forwarded-For must not make a remote
            # request look local to an unauthenticated loopback dashboard
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():  # uvicorn has no event for it
            await asyncio.wait({serving}, timeout=0.05)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()
            shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            print(f"jobrunner dashboard: http://{shown}:{bound[1]}/ (schema {schema})", flush=True)
        await serving
        return EXIT_OK if server.started else EXIT_USAGE


def run_dashboard(settings: Settings, host: str | None, port: int | None) -> int:
    host = host or settings.dashboard_host
    port = settings.dashboard_port if port is None else port
    refusal = AccessPolicy(settings).refusal_to_bind(host)
    if refusal is not None:
        print(f"jobrunner: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    return event_loop.run(_serve(settings, host, port), settings.event_loop)
