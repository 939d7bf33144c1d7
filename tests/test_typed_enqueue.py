"""Typed enqueue: a handler enqueues its own job type, its payload checked by its payload model
in the caller, before anything is sent; sync and async, inside the caller's transaction."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any
from uuid import UUID

import asyncpg
import psycopg
import pytest
from pydantic import BaseModel, Field

from jobrunner import AsyncClient, Client, InvalidJob, JobContext, NewJob, handler
from jobrunner.enqueue import EnqueueOptions
from tests.support import job_row, running_daemon

COUNT = "SELECT count(*) FROM background_jobs"
USER = UUID("5f0c7d1e-8a47-4c0e-9a57-3c1e4a1d2b6f")


class Resize(BaseModel):
    user_id: UUID
    path: str = Field(min_length=1)
    width: int = 256


class Other(BaseModel):
    path: str


@handler("resize_photo", payload_model=Resize)
async def resize_photo(ctx: JobContext[Resize]) -> dict[str, Any]:
    return {"user": str(ctx.payload.user_id), "width": ctx.payload.width}


@handler("untyped")
async def untyped(ctx: JobContext[dict[str, Any]]) -> None:
    return None


@pytest.fixture
def pg(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url) as connection:
        yield connection


async def test_a_model_instance_is_stored_as_its_json_with_the_options(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    job_id = await resize_photo.enqueue(
        AsyncClient(pool), Resize(user_id=USER, path="a.jpg"), priority=7, queue="media", dedupe_key="resize:a"
    )
    row = await job_row(conn, job_id)
    assert row["job_type"] == "resize_photo"
    assert json.loads(row["payload"]) == {"user_id": str(USER), "path": "a.jpg", "width": 256}
    assert (row["priority"], row["queue"], row["dedupe_key"]) == (7, "media", "resize:a")


async def test_a_mapping_is_checked_by_the_model_and_stored_as_the_model_reads_it(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    job_id = await resize_photo.enqueue(AsyncClient(pool), {"user_id": str(USER), "path": "b.jpg", "width": "64"})
    assert json.loads((await job_row(conn, job_id))["payload"]) == {"user_id": str(USER), "path": "b.jpg", "width": 64}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"user_id": "not-a-uuid", "path": "c.jpg"}, "payload does not fit resize_photo's Resize"),
        ({"user_id": str(USER)}, "path"),  # a required field missing
        ({"user_id": str(USER), "path": ""}, "at least 1 character"),
        (None, "payload does not fit resize_photo's Resize"),
        (Other(path="d.jpg"), "resize_photo takes a Resize payload, not a Other"),
    ],
)
async def test_a_payload_the_model_refuses_is_an_error_in_the_caller_and_nothing_is_sent(
    pool: asyncpg.Pool, conn: asyncpg.Connection, payload: Any, message: str
) -> None:
    with pytest.raises(InvalidJob, match=message):
        await resize_photo.enqueue(AsyncClient(pool), payload)
    assert await conn.fetchval(COUNT) == 0


async def test_invalid_options_are_refused_as_for_a_string_typed_enqueue(pool: asyncpg.Pool) -> None:
    with pytest.raises(InvalidJob, match="max_attempts"):
        await resize_photo.enqueue(AsyncClient(pool), Resize(user_id=USER, path="e.jpg"), max_attempts=0)


async def test_without_a_payload_model_any_mapping_goes(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    job_id = await untyped.enqueue(AsyncClient(pool), {"anything": [1, 2]})
    assert json.loads((await job_row(conn, job_id))["payload"]) == {"anything": [1, 2]}


async def test_async_typed_enqueue_follows_the_transaction(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    client = AsyncClient(pool)
    async with pool.acquire() as own:
        transaction = own.transaction()
        await transaction.start()
        await resize_photo.enqueue(client, Resize(user_id=USER, path="f.jpg"), connection=own)
        assert await conn.fetchval(COUNT) == 0  # not visible before the commit
        await transaction.rollback()
    assert await conn.fetchval(COUNT) == 0
    async with pool.acquire() as own, own.transaction():
        job_id = await resize_photo.enqueue(client, Resize(user_id=USER, path="g.jpg"), connection=own)
    assert (await job_row(conn, job_id))["status"] == "pending"


def test_sync_typed_enqueue_checks_the_payload_and_follows_the_transaction(
    db_url: str, pg: psycopg.Connection[Any]
) -> None:
    client = Client(pg)
    with pytest.raises(InvalidJob, match="payload does not fit resize_photo's Resize"):
        resize_photo.enqueue_sync(client, {"user_id": "nope", "path": "h.jpg"})
    job_id = resize_photo.enqueue_sync(client, Resize(user_id=USER, path="h.jpg"), max_attempts=2)
    with psycopg.connect(db_url) as other:
        assert other.execute(COUNT).fetchone() == (0,)  # pg's transaction is still open
    pg.rollback()
    assert pg.execute(COUNT).fetchone() == (0,)
    job_id = resize_photo.enqueue_sync(client, Resize(user_id=USER, path="i.jpg"), max_attempts=2)
    pg.commit()
    record = client.get(job_id)
    assert record is not None
    assert (record.job_type, record.max_attempts, record.payload["path"]) == ("resize_photo", 2, "i.jpg")


async def test_a_handler_enqueues_a_typed_follow_up_that_the_daemon_runs(
    db_url: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    @handler("upload_done", payload_model=Other)
    async def upload_done(ctx: JobContext[Other]) -> int:
        async with ctx.transaction() as own:
            return await resize_photo.enqueue(ctx, Resize(user_id=USER, path=ctx.payload.path), connection=own)

    parent = await upload_done.enqueue(AsyncClient(pool), Other(path="j.jpg"))
    async with running_daemon(db_url, [upload_done, resize_photo], burst=True):
        pass
    parent_row = await job_row(conn, parent)
    assert parent_row["status"] == "completed", parent_row["last_error"]
    child = json.loads(parent_row["result"])
    child_row = await job_row(conn, child)
    assert child_row["status"] == "completed", child_row["last_error"]
    assert json.loads(child_row["result"]) == {"user": str(USER), "width": 256}


def test_the_enqueue_options_are_defined_once() -> None:
    # NewJob holds each option's default but the flow's two (a job's parents are not a column of
    # its own row); EnqueueOptions types the keywords of every entry point
    flow_options = ["depends_on", "on_parent_failure"]
    assert [f.name for f in fields(NewJob)] + flow_options == ["job_type", "payload", *EnqueueOptions.__annotations__]
    entry_points: list[Callable[..., Any]] = [
        AsyncClient.enqueue,
        Client.enqueue,
        JobContext.enqueue,
        resize_photo.enqueue,
        resize_photo.enqueue_sync,
    ]
    for method in entry_points:
        options = inspect.signature(method).parameters["options"]
        assert (options.kind, options.annotation) == (inspect.Parameter.VAR_KEYWORD, "Unpack[EnqueueOptions]")
