"""Bad input everywhere it enters: the Python enqueue path (AsyncClient, Client, NewJob), rows
inserted straight into the table by SQL, and the settings.

The rule: the enqueue path raises InvalidJob with a reason or stores exactly what it was given; a
bad row fails *that job* with a clear error while the daemon keeps working; an invalid setting
stops start-up with a message naming the variable and what it accepts.

tests/test_client.py already covers one example per validation rule, and tests/test_daemon.py
generated payloads against a payload model; this file adds the generated arguments (every
argument at once, both clients), the sizes and shapes (10 MB, 10,000 levels, huge numbers,
surrogates, infinities) and the rows no client would write.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

from jobrunner import AsyncClient, Client, JobContext, NewJob, handler
from jobrunner.dsn import parse_database_url
from jobrunner.new_job import InvalidJob
from jobrunner.settings import Settings, describe_settings_error
from tests.support import job_row, running_daemon, wait_for

STATUS = "SELECT status FROM background_jobs WHERE id = $1"
TEN_MB = 10 * 1024 * 1024
# as large as the database takes by default (its limit is 1 MiB of JSON text)
ONE_MB = 1_000_000


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def nested_json(levels: int) -> str:
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


# -- the enqueue path, generated ---------------------------------------------------------------

# text PostgreSQL can store, and text it cannot (NUL); lone surrogates are the xfail cases below
_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
_huge_ints = st.integers(min_value=-(2**80), max_value=2**80) | st.sampled_from([2**63, -(2**63) - 1, 10**40])
_numbers = _huge_ints | st.floats(allow_nan=True, allow_infinity=True)
_json = st.recursive(
    st.none() | st.booleans() | _numbers | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=10,
)
_payloads = (
    st.dictionaries(_text | st.integers(), _json, max_size=4)
    | st.lists(_json, max_size=2)
    | st.sampled_from([None, "text", 3, {"set": {1, 2}}, {"bytes": b"x"}, {(1, 2): "tuple key"}])
)
_arguments = st.fixed_dictionaries(
    {
        "job_type": _text | st.sampled_from(["t" * 200, "t" * 201, None, 5]),
        "payload": _payloads,
    },
    optional={
        "queue": _text | st.sampled_from(["q" * 201, None]),
        "priority": _huge_ints | st.sampled_from([2**31 - 1, -(2**31), 2**31, True, 1.5, "1"]),
        "max_attempts": st.integers(min_value=-5, max_value=1005) | st.sampled_from([True, 2.0]),
        "dedupe_key": st.none() | _text | st.just("k" * 501),
        "concurrency_key": st.none() | _text | st.just("k" * 501),
        "run_at": st.none()
        | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))
        | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
        "delay": st.none() | st.floats(min_value=-10, max_value=10**6) | st.sampled_from([math.nan, math.inf]),
    },
)

GENERATED = hypothesis_settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def split(arguments: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    rest = dict(arguments)
    return rest.pop("job_type"), rest.pop("payload"), rest


def same_json(stored: str, given: str) -> bool:
    """Equal as JSON values: jsonb keeps numbers as numeric, so 1e+308 comes back as 1000…0."""
    return bool(
        json.loads(stored, parse_float=Decimal, parse_int=Decimal)
        == json.loads(given, parse_float=Decimal, parse_int=Decimal)
    )


def check_stored(row: Any, job_type: Any, payload: Any, options: dict[str, Any]) -> None:
    """What was stored is what was given."""
    assert row["job_type"] == job_type
    # the clients take a falsy payload for "no payload" (see test_a_falsy_non_object_payload_is_invalid_job)
    assert same_json(row["payload"], json.dumps(payload or {}))
    assert row["priority"] == options.get("priority", 0)
    assert row["max_attempts"] == options.get("max_attempts", 5)
    assert row["queue"] == options.get("queue", "default")


@GENERATED
@given(_arguments)
def test_new_job_validation_raises_only_invalid_job(arguments: dict[str, Any]) -> None:
    job_type, payload, options = split(arguments)
    try:
        NewJob(job_type, payload, **options).validated()
    except InvalidJob as exc:
        assert str(exc)  # a reason, not an empty message


@pytest.fixture
def pg(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url) as connection:
        yield connection


def test_sync_client_refuses_or_stores_exactly(pg: psycopg.Connection[Any]) -> None:
    client = Client(pg)
    outcomes: list[str] = []

    @GENERATED
    @given(_arguments)
    def enqueue(arguments: dict[str, Any]) -> None:
        job_type, payload, options = split(arguments)
        try:
            job_id = client.enqueue(job_type, payload, **options)
        except InvalidJob:
            outcomes.append("refused")
            pg.rollback()
            return
        with pg.cursor() as cur:
            cur.execute(
                "SELECT job_type, payload::text AS payload, priority, max_attempts, queue FROM background_jobs"
                " WHERE id = %s",
                (job_id,),
            )
            values = cur.fetchone()
        assert values is not None
        names = ("job_type", "payload", "priority", "max_attempts", "queue")
        check_stored(dict(zip(names, values, strict=True)), job_type, payload, options)
        outcomes.append("stored")
        pg.rollback()

    enqueue()
    assert {"refused", "stored"} <= set(outcomes)


def generated_arguments(count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    @hypothesis_settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(_arguments)
    def collect(arguments: dict[str, Any]) -> None:
        found.append(arguments)

    collect()
    return found


async def test_async_client_refuses_or_stores_exactly(conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    outcomes: list[str] = []
    for arguments in generated_arguments(150):
        job_type, payload, options = split(arguments)
        # each example in a transaction of its own, rolled back: a dedupe key drawn twice must not
        # make the second enqueue return the first example's job (that is what dedupe is for)
        transaction = conn.transaction()
        await transaction.start()
        try:
            try:
                job_id = await client.enqueue(job_type, payload, **options)
            except InvalidJob:
                outcomes.append("refused")
                continue
            row = await conn.fetchrow(
                "SELECT job_type, payload::text AS payload, priority, max_attempts, queue FROM background_jobs"
                " WHERE id = $1",
                job_id,
            )
            check_stored(row, job_type, payload, options)
            outcomes.append("stored")
        finally:
            await transaction.rollback()
    assert {"refused", "stored"} <= set(outcomes)


# -- the enqueue path, sizes and shapes --------------------------------------------------------


@pytest.fixture
async def both_clients(db_url: str) -> Any:
    """enqueue(job_type, payload, **options) through AsyncClient and through Client."""
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    sync = psycopg.connect(db_url, autocommit=True)
    try:

        async def via_async(*args: Any, **kwargs: Any) -> int:
            return await AsyncClient(pool).enqueue(*args, **kwargs)

        async def via_sync(*args: Any, **kwargs: Any) -> int:
            return await asyncio.to_thread(Client(sync).enqueue, *args, **kwargs)

        yield [via_async, via_sync]
    finally:
        sync.close()
        await pool.close()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"blob": "x" * TEN_MB}, "the limit is 1048576 bytes"),
        ({"nan": math.nan}, "not JSON-serialisable"),
        ({"inf": -math.inf}, "not JSON-serialisable"),
        ({"text": "a\x00b"}, "NUL character"),
        ({"key\x00": 1}, "NUL character"),
        ([1, 2], "payload must be a JSON object"),
    ],
    ids=["10MB", "nan", "infinity", "nul-value", "nul-key", "list"],
)
async def test_enqueue_refuses_with_a_reason(
    both_clients: Any, conn: asyncpg.Connection, payload: Any, message: str
) -> None:
    for enqueue in both_clients:
        with pytest.raises(InvalidJob, match=message):
            await enqueue("bad", payload)
    assert await conn.fetchval("SELECT count(*) FROM background_jobs") == 0


async def test_huge_integers_and_deep_but_sane_nesting_round_trip(both_clients: Any, conn: asyncpg.Connection) -> None:
    payload = {"big": 2**200, "negative": -(2**64), "float": 1e308, "deep": nested(500), "emoji": "💥\u202e"}
    for enqueue in both_clients:
        job_id = await enqueue("big", payload)
        stored = await conn.fetchval("SELECT payload::text FROM background_jobs WHERE id = $1", job_id)
        assert same_json(stored, json.dumps(payload))


@pytest.mark.parametrize("payload", [[], "", 0, False], ids=["list", "str", "zero", "false"])
async def test_a_falsy_non_object_payload_is_invalid_job(both_clients: Any, payload: Any) -> None:
    for enqueue in both_clients:
        with pytest.raises(InvalidJob):
            await enqueue("t", payload)


async def test_ten_thousand_levels_of_nesting_is_invalid_job(both_clients: Any) -> None:
    for enqueue in both_clients:
        with pytest.raises(InvalidJob):
            await enqueue("deep", nested(10_000))


@pytest.mark.parametrize("where", ["payload value", "payload key", "job_type", "dedupe_key"])
async def test_lone_surrogates_are_invalid_job(both_clients: Any, where: str) -> None:
    bad = "a\ud800"
    arguments: dict[str, Any] = {
        "payload value": {"args": ("t", {"v": bad})},
        "payload key": {"args": ("t", {bad: 1})},
        "job_type": {"args": (bad, {})},
        "dedupe_key": {"args": ("t", {}), "dedupe_key": bad},
    }[where]
    args = arguments.pop("args")
    for enqueue in both_clients:
        with pytest.raises(InvalidJob):
            await enqueue(*args, **arguments)


@pytest.mark.parametrize(
    "options",
    [
        {"delay": 1e12},
        {"delay": timedelta.max},
        {"run_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
        {"run_at": "2030-01-01T00:00:00Z"},
    ],
    ids=["delay-1e12s", "delay-timedelta-max", "run_at-before-year-1-utc", "run_at-string"],
)
async def test_out_of_range_times_are_invalid_job(both_clients: Any, options: dict[str, Any]) -> None:
    for enqueue in both_clients:
        with pytest.raises(InvalidJob):
            await enqueue("t", {}, **options)


async def test_extreme_run_at_is_refused(pool: asyncpg.Pool) -> None:
    with pytest.raises(InvalidJob):
        await AsyncClient(pool).enqueue("t", {}, run_at=datetime.min.replace(tzinfo=UTC))


# -- rows written by SQL -------------------------------------------------------------------------


class Item(BaseModel):
    name: str = Field(max_length=50)
    count: int


@handler("item", payload_model=Item)
async def item_handler(ctx: JobContext[Item]) -> dict[str, Any]:
    return {"name": ctx.payload.name, "count": ctx.payload.count}


@handler("anything")
async def anything(ctx: JobContext[dict[str, Any]]) -> int:
    return len(json.dumps(ctx.payload))


@handler("noop")
async def noop(_ctx: JobContext[dict[str, Any]]) -> None:
    return None


HANDLERS = [item_handler, anything, noop]


async def insert_raw(conn: asyncpg.Connection, job_type: str, payload_sql: str, **columns: Any) -> int:
    """A row as an app's SQL would write it: the payload as a jsonb literal."""
    names = ["job_type", "payload", *columns]
    values = [job_type, payload_sql, *columns.values()]
    placeholders = ", ".join(f"${i}" + ("::jsonb" if n == "payload" else "") for i, n in enumerate(names, 1))
    job_id: int = await conn.fetchval(
        f"INSERT INTO background_jobs ({', '.join(names)}) VALUES ({placeholders}) RETURNING id", *values
    )
    return job_id


async def test_bad_rows_fail_alone_and_the_daemon_goes_on(db_url: str, conn: asyncpg.Connection) -> None:
    rows = {
        # (job_type, payload as JSON text, columns) -> (status, what last_error / result must say)
        "1 MB for a model": ("item", json.dumps({"name": "x" * ONE_MB, "count": 1}), {}),
        "1 MB, no model": ("anything", json.dumps({"blob": "x" * ONE_MB}), {}),
        "integer past int64": ("item", '{"name": "big", "count": 123456789012345678901234567890}', {}),
        "5000-digit number": ("anything", '{"n": ' + "9" * 5000 + "}", {}),
        "1e400": ("anything", '{"n": 1e400}', {}),
        "wrong types": ("item", '{"name": ["x"], "count": {"n": 1}}', {}),
        "empty object": ("item", "{}", {}),
        "unknown type": ("no_such_type_💥" + "x" * 180, "{}", {}),
        "extreme priority": ("noop", "{}", {"priority": 2**31 - 1}),
        "lowest priority": ("noop", "{}", {"priority": -(2**31)}),
        "attempts already spent": ("noop", "{}", {"attempts": 999, "max_attempts": 1000}),
        "far future": ("noop", "{}", {"scheduled_at": datetime(9000, 1, 1, tzinfo=UTC)}),
    }
    ids = {name: await insert_raw(conn, job_type, payload, **cols) for name, (job_type, payload, cols) in rows.items()}
    async with running_daemon(db_url, HANDLERS, concurrency=8) as daemon:
        await wait_for(
            conn,
            "SELECT count(*) FROM background_jobs WHERE status IN ('pending', 'running') AND scheduled_at < now()",
            expect=0,
            timeout=30,
        )
        after = await insert_raw(conn, "noop", "{}")
        await wait_for(conn, STATUS, after, expect="completed", timeout=10)
        assert daemon.ready.is_set()

    result = {name: await job_row(conn, job_id) for name, job_id in ids.items()}
    expected_status = {
        "1 MB for a model": ("failed", "invalid payload for item: name: String should have at most 50 characters"),
        "1 MB, no model": ("completed", None),
        "integer past int64": ("completed", None),
        "5000-digit number": ("failed", "payload is not valid JSON"),
        "1e400": ("completed", None),
        "wrong types": ("failed", "invalid payload for item: "),
        "empty object": ("failed", "invalid payload for item: "),
        "unknown type": ("failed", "no handler is registered for it"),
        "extreme priority": ("completed", None),
        "lowest priority": ("completed", None),
        "attempts already spent": ("completed", None),
        "far future": ("pending", None),
    }
    for name, (status, error) in expected_status.items():
        row = result[name]
        assert row["status"] == status, (name, row["status"], row["last_error"])
        if error is not None:
            assert error in row["last_error"], (name, row["last_error"])
            assert len(row["last_error"]) <= 10_000
    assert json.loads(result["integer past int64"]["result"]) == {
        "name": "big",
        "count": 123456789012345678901234567890,
    }


async def test_the_database_refuses_what_it_cannot_store(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.UntranslatableCharacterError):
        await insert_raw(conn, "t", '{"a": "\\u0000"}')
    with pytest.raises(asyncpg.InvalidTextRepresentationError):
        await insert_raw(conn, "t", '{"a": NaN}')
    with pytest.raises(asyncpg.CheckViolationError):
        await insert_raw(conn, "t", "[1]")
    with pytest.raises(asyncpg.CheckViolationError):
        await insert_raw(conn, "", "{}")
    with pytest.raises(asyncpg.CheckViolationError):
        await insert_raw(conn, "t", "{}", max_attempts=0)
    with pytest.raises(asyncpg.CheckViolationError):
        await insert_raw(conn, "t", "{}", status="paused")


async def test_a_ten_thousand_level_row_fails_alone(db_url: str, conn: asyncpg.Connection) -> None:
    deep = await insert_raw(conn, "anything", nested_json(10_000))
    async with running_daemon(db_url, HANDLERS):
        after = await insert_raw(conn, "noop", "{}")
        await wait_for(conn, STATUS, after, expect="completed", timeout=10)
        await wait_for(conn, STATUS, deep, expect="failed", timeout=5)


async def test_a_minus_infinity_row_fails_alone(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO background_jobs (job_type, scheduled_at) VALUES ('noop', '-infinity')")
    async with running_daemon(db_url, HANDLERS):
        after = await insert_raw(conn, "noop", "{}")
        await wait_for(conn, STATUS, after, expect="completed", timeout=5)


async def test_a_running_row_without_a_lease_is_rescued(db_url: str, conn: asyncpg.Connection) -> None:
    stranded = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, status, attempts) VALUES ('noop', 'running', 1) RETURNING id"
    )
    async with running_daemon(db_url, HANDLERS):
        await wait_for(conn, STATUS, stranded, expect="completed", timeout=5)


# -- settings ------------------------------------------------------------------------------------

# variable -> (an invalid value, words of the accepted values the message must show)
INVALID_SETTINGS: dict[str, tuple[str, str]] = {
    "JOBRUNNER_PGBOUNCER": ("maybe", "valid boolean"),
    "JOBRUNNER_SCHEMA": ("Bad-Schema", "lower-case SQL identifier"),
    "JOBRUNNER_QUEUES": (" , ", "at least one queue"),
    "JOBRUNNER_CONCURRENCY": ("0", "greater than or equal to 1"),
    "JOBRUNNER_BATCH_SIZE": ("20000", "less than or equal to 10000"),
    "JOBRUNNER_CLAIM_MAX_BYTES": ("100", "greater than or equal to 1024"),
    "JOBRUNNER_PREFETCH": ("-1", "greater than or equal to 0"),
    "JOBRUNNER_PREFETCH_TTL": ("0", "greater than 0"),
    "JOBRUNNER_VACUUM": ("sometimes", "'auto', 'always' or 'never'"),
    "JOBRUNNER_EVENT_LOOP": ("trio", "'auto', 'asyncio' or 'uvloop'"),
    "JOBRUNNER_VACUUM_INTERVAL": ("0", "greater than 0"),
    "JOBRUNNER_VACUUM_MIN_DEAD_ROWS": ("0", "greater than or equal to 1"),
    "JOBRUNNER_POLL_INTERVAL": ("0", "greater than 0"),
    "JOBRUNNER_LISTEN": ("perhaps", "valid boolean"),
    "JOBRUNNER_LEASE_SECONDS": ("0.5", "greater than or equal to 1"),
    "JOBRUNNER_HEARTBEAT_INTERVAL": ("-1", "greater than 0"),
    "JOBRUNNER_RESCUE_INTERVAL": ("0", "greater than 0"),
    "JOBRUNNER_CANCEL_POLL_INTERVAL": ("0", "greater than 0"),
    "JOBRUNNER_SHUTDOWN_GRACE": ("-1", "greater than or equal to 0"),
    "JOBRUNNER_BURST_WAIT": ("-1", "greater than or equal to 0"),
    "JOBRUNNER_DEFAULT_TIMEOUT": ("0", "greater than 0"),
    "JOBRUNNER_RETENTION_SECONDS": ("-5", "greater than or equal to 0"),
    "JOBRUNNER_PRUNE_INTERVAL": ("0", "greater than 0"),
    "JOBRUNNER_LIMITS": ('{"analyze_image": {}}', "max_running, rate, per_key_max_running"),
    "JOBRUNNER_QUEUE_LIMITS": ('{"ai": {"per_seconds": 60}}', "set at least one of max_running, rate"),
    "JOBRUNNER_HANDLER_MODULES": ("[1", "Expecting"),
    "JOBRUNNER_POOL_MIN_SIZE": ("-1", "greater than or equal to 0"),
    "JOBRUNNER_CONNECT_TIMEOUT": ("0", "greater than 0"),
    "JOBRUNNER_POOL_IDLE_TIMEOUT": ("0", "greater than 0"),
    "JOBRUNNER_HTTP_ENABLED": ("sometimes", "valid boolean"),
    "JOBRUNNER_PLUGIN_SCHEDULES": ("maybe", "valid boolean"),
    "JOBRUNNER_PLUGIN_SAMPLERS": ("maybe", "valid boolean"),
    "JOBRUNNER_HTTP_PORT": ("70000", "less than or equal to 65535"),
    "JOBRUNNER_SAMPLE_INTERVAL": ("0", "greater than 0"),
    "JOBRUNNER_HTTP_MAX_CONNECTIONS": ("0", "greater than or equal to 1"),
    "JOBRUNNER_HTTP_REQUESTS_PER_SECOND": ("0", "greater than 0"),
    "JOBRUNNER_READINESS_INTERVAL": ("0", "greater than 0"),
    "JOBRUNNER_METRICS_QUEUES": ("mail,__other__", "cannot name a queue"),
    "JOBRUNNER_SCHEDULES": ('[{"name": 1}]', "valid string"),
    "JOBRUNNER_SCHEDULE_INTERVAL": ("61", "less than or equal to 60"),
    "JOBRUNNER_SCHEDULE_MISFIRE_GRACE": ("-1", "greater than or equal to 0"),
    "JOBRUNNER_LOG_FORMAT": ("xml", "'auto', 'json' or 'console'"),
    "JOBRUNNER_LOG_LEVEL": ("verbose", "'debug', 'info', 'warning' or 'error'"),
    "JOBRUNNER_NOTIFY_MIN_INTERVAL": ("11", "less than or equal to 10"),
    "JOBRUNNER_CANCEL_GRACE": ("0", "greater than 0"),
    "JOBRUNNER_MAX_ABANDONED_HANDLERS": ("0", "greater than or equal to 1"),
    "JOBRUNNER_BLOCKING_THREADS": ("0", "greater than or equal to 1"),
    "JOBRUNNER_BLOCKING_PROCESSES": ("2000", "less than or equal to 1024"),
    "JOBRUNNER_MAX_SNOOZES": ("-1", "greater than or equal to 0"),
    "JOBRUNNER_TRACING": ("sometimes", "valid boolean"),
    "JOBRUNNER_DASHBOARD_PORT": ("70000", "less than or equal to 65535"),
    "JOBRUNNER_DASHBOARD_USERS": ('{"ops": {"password": "short", "role": "admin"}}', "at least 8 characters"),
    "JOBRUNNER_DASHBOARD_TOKEN": ("short", "at least 16 characters"),
    "JOBRUNNER_DASHBOARD_READ_TOKEN": ("short", "at least 16 characters"),
    "JOBRUNNER_DASHBOARD_REDACT_KEYS": ("[1", "Expecting"),
    "JOBRUNNER_DASHBOARD_REFRESH_INTERVAL": ("0.1", "greater than or equal to 0.2"),
    "JOBRUNNER_DASHBOARD_BULK_BATCH": ("0", "greater than or equal to 1"),
    "JOBRUNNER_DASHBOARD_POOL_SIZE": ("0", "greater than or equal to 1"),
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("JOBRUNNER_", "SENTRY_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env
    return monkeypatch


@pytest.mark.parametrize("variable", sorted(INVALID_SETTINGS))
def test_an_invalid_setting_names_the_variable_and_what_it_accepts(
    clean_env: pytest.MonkeyPatch, variable: str
) -> None:
    value, accepted = INVALID_SETTINGS[variable]
    clean_env.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    message = describe_settings_error(raised.value)
    assert variable in message
    assert accepted in message


def test_every_setting_has_an_invalid_value_case() -> None:
    """A new setting needs a line in INVALID_SETTINGS (or in the known gaps below)."""
    gaps = {"database_url", "listen_database_url", "worker_id", "http_host", "schedules_file", "sentry_dsn"}
    gaps |= {"sentry_environment", "embedded_data_dir", "pool_max_size", "dashboard_host"}
    covered = {v.removeprefix("JOBRUNNER_").lower() for v in INVALID_SETTINGS} - {"schema"} | {"schema_name"}
    assert set(Settings.model_fields) == covered | gaps


def test_the_schema_error_names_the_variable_once(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("JOBRUNNER_SCHEMA", "Bad-Schema")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "JOBRUNNER_JOBRUNNER" not in describe_settings_error(raised.value)


def test_pool_max_size_below_one_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("JOBRUNNER_POOL_MAX_SIZE", "0")
    with pytest.raises(ValidationError):
        Settings()


async def _run_cli(env: dict[str, str], db_url: str) -> tuple[int, str]:
    from tests.support import jobrunner_process

    proc = jobrunner_process(db_url, "run", "--burst", env=env, stdout=-1, stderr=-2)
    try:
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("JOBRUNNER_LOG_LEVEL", "verbose", "'debug', 'info', 'warning' or 'error'"),
        ("JOBRUNNER_LEASE_SECONDS", "0", "greater than or equal to 1"),
        ("JOBRUNNER_LISTEN_DATABASE_URL", "mysql://db/x", "postgresql://"),
    ],
)
async def test_jobrunner_run_stops_on_an_invalid_setting(db_url: str, variable: str, value: str, accepted: str) -> None:
    code, output = await _run_cli({variable: value}, db_url)
    assert code == 2, output
    assert accepted in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("variable", "value"), [("JOBRUNNER_LIMITS", "not json"), ("SENTRY_DSN", "not-a-dsn")], ids=["limits", "sentry"]
)
async def test_jobrunner_run_names_unparsable_settings(db_url: str, variable: str, value: str) -> None:
    code, output = await _run_cli({variable: value}, db_url)
    assert code == 2
    assert variable in output
    assert "Traceback" not in output


def test_a_pooler_url_keeps_only_server_parameters() -> None:
    url = parse_database_url("postgresql://u:p@h:6543/db?pgbouncer=true&connection_limit=1&sslmode=require")
    assert url.behind_pooler and url.url == "postgresql://u:p@h:6543/db?sslmode=require"
