"""send_notification and check_push_receipts through the real daemon and httpx against a local
server speaking Expo's push API, on the real database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import structlog

from handlers.tests.fake_expo import Failure, FakeExpo
from handlers.tests.test_schema import ALICE, BOB
from jobrunner_handlers.notifications import check_push_receipts, send_notification
from tests.support import job_row, running_daemon


@pytest.fixture
def expo() -> Iterator[FakeExpo]:
    server = FakeExpo().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def expo_env(clean_app_env: pytest.MonkeyPatch, expo: FakeExpo) -> FakeExpo:
    clean_app_env.setenv("JOBRUNNER_APP_EXPO_PUSH_URL", expo.push_url)
    clean_app_env.setenv("JOBRUNNER_APP_ALLOW_PRIVATE_NETWORK", "true")  # http on loopback: tests only
    return expo


def token(user: uuid.UUID, i: int) -> str:
    return f"ExponentPushToken[{str(user)[-4:]}-{i:04d}]"


async def add_tokens(conn: asyncpg.Connection, user: uuid.UUID, count: int) -> list[str]:
    tokens = [token(user, i) for i in range(count)]
    await conn.executemany(
        "INSERT INTO push_tokens (user_id, token, platform) VALUES ($1, $2, 'ios')", [(user, t) for t in tokens]
    )
    return tokens


async def run(
    db_url: str, conn: asyncpg.Connection, job_type: str, payload: dict[str, Any], **options: Any
) -> dict[str, Any]:
    job_id = await conn.fetchval("SELECT enqueue_job($1, $2::jsonb)", job_type, json.dumps(payload))
    async with running_daemon(db_url, [send_notification, check_push_receipts], burst=True, **options):
        pass
    return dict(await job_row(conn, job_id))


MESSAGE = {"title": "Your analysis is ready", "body": "Tap to see your glow score", "data": {"screen": "results"}}


def received_once(expo: FakeExpo, tokens: list[str]) -> bool:
    return sorted(expo.received) == sorted(tokens) and all(len(expo.received[t]) == 1 for t in tokens)


async def statuses(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM notifications GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def test_250_tokens_go_in_batches_of_100_each_token_once(
    db_url: str, conn: asyncpg.Connection, expo_env: FakeExpo
) -> None:
    tokens = await add_tokens(conn, ALICE, 200) + await add_tokens(conn, BOB, 50)
    await add_tokens(conn, uuid.uuid4(), 3)  # someone else's
    job = await run(db_url, conn, "send_notification", {**MESSAGE, "user_ids": [str(ALICE), str(BOB)]})
    assert job["status"] == "completed", job["last_error"]
    assert sorted(len(batch) for batch in expo_env.send_requests) == [50, 100, 100]
    assert received_once(expo_env, tokens)
    message = expo_env.received[tokens[0]][0]
    assert message == {"to": tokens[0], **MESSAGE, "sound": "default"}
    assert expo_env.gzipped_requests == 3  # bodies over 1 KiB are compressed, as Expo's SDK does
    assert expo_env.authorizations == [None, None, None]  # no access token configured: none sent
    result = json.loads(job["result"])
    assert (result["tokens"], result["sent"], result["batches"], result["unknown"]) == (250, 250, 3, 0)
    assert await statuses(conn) == {"sent": 250}
    assert await conn.fetchval("SELECT count(DISTINCT ticket_id) FROM notifications WHERE sent_at IS NOT NULL") == 250
    receipts = await conn.fetchrow(
        "SELECT payload, dedupe_key, extract(epoch FROM scheduled_at - now()) AS delay FROM background_jobs "
        "WHERE job_type = 'check_push_receipts'"
    )
    assert json.loads(receipts["payload"]) == {"job_id": job["id"], "round": 1}
    assert 890 < receipts["delay"] <= 900


async def test_device_not_registered_deactivates_the_token_and_the_access_token_is_sent(
    db_url: str, conn: asyncpg.Connection, expo_env: FakeExpo, clean_app_env: pytest.MonkeyPatch
) -> None:
    clean_app_env.setenv("EXPO_ACCESS_TOKEN", "expo-secret")
    expo_env.access_token = "expo-secret"
    good, gone, other = await add_tokens(conn, ALICE, 3)
    expo_env.unregistered.add(gone)
    job = await run(db_url, conn, "send_notification", {"user_id": str(ALICE), "body": "hello"})
    assert job["status"] == "completed", job["last_error"]
    assert expo_env.authorizations == ["Bearer expo-secret"]
    result = json.loads(job["result"])
    assert (result["sent"], result["errors"], result["deactivated_tokens"]) == (2, 1, 1)
    row = await conn.fetchrow("SELECT * FROM notifications WHERE push_token = $1", gone)
    assert (row["status"], row["error_code"], row["ticket_id"]) == ("error", "DeviceNotRegistered", None)
    assert "is not a registered push notification recipient" in row["error_message"]
    tokens = await conn.fetch("SELECT token, active, last_error FROM push_tokens ORDER BY token")
    assert {t["token"]: (t["active"], t["last_error"]) for t in tokens} == {
        good: (True, None),
        gone: (False, "DeviceNotRegistered"),
        other: (True, None),
    }
    # the next notification goes to the active tokens only
    expo_env.received.clear()
    await run(db_url, conn, "send_notification", {"user_id": str(ALICE), "body": "again"})
    assert sorted(expo_env.received) == sorted([good, other])


async def test_a_retried_job_does_not_send_again_what_was_sent(
    db_url: str, conn: asyncpg.Connection, expo_env: FakeExpo
) -> None:
    tokens = await add_tokens(conn, ALICE, 250)
    expo_env.fail_send[2] = Failure(500)  # the first batch is accepted, the second refused
    job = await run(db_url, conn, "send_notification", {**MESSAGE, "user_id": str(ALICE)})
    assert (job["status"], job["attempts"]) == ("completed", 2)  # the retry's backoff is within the burst
    assert received_once(expo_env, tokens)
    assert [len(batch) for batch in expo_env.send_requests] == [100, 100, 100, 50]
    assert await statuses(conn) == {"sent": 250}


async def test_an_unanswered_request_is_not_sent_again(
    db_url: str, conn: asyncpg.Connection, expo_env: FakeExpo
) -> None:
    tokens = await add_tokens(conn, ALICE, 150)
    expo_env.drop_send.add(1)  # Expo takes the batch, the answer is lost
    job = await run(db_url, conn, "send_notification", {**MESSAGE, "user_id": str(ALICE)})
    assert (job["status"], job["attempts"]) == ("completed", 1), job["last_error"]
    assert received_once(expo_env, tokens)
    assert json.loads(job["result"])["unknown"] == 100
    assert await statuses(conn) == {"unknown": 100, "sent": 50}

    # a worker that died mid-request leaves rows 'sending': the next attempt does not resend them
    await conn.execute("UPDATE notifications SET status = 'sending' WHERE status = 'sent'")
    await conn.execute("UPDATE background_jobs SET status = 'pending' WHERE id = $1", job["id"])
    async with running_daemon(db_url, [send_notification], burst=True):
        pass
    assert received_once(expo_env, tokens)
    assert await statuses(conn) == {"unknown": 150}


async def test_a_429_from_expo_pauses_the_type_and_keeps_the_rows_for_the_retry(
    db_url: str, conn: asyncpg.Connection, expo_env: FakeExpo
) -> None:
    await add_tokens(conn, ALICE, 3)
    expo_env.fail_send[1] = Failure(429, {"retry-after": "60"}, "TOO_MANY_REQUESTS", "Slow down.")
    job = await run(db_url, conn, "send_notification", {**MESSAGE, "user_id": str(ALICE)})
    assert (job["status"], job["attempts"]) == ("pending", 1)
    assert "UpstreamRateLimited: Expo send answered 429: TOO_MANY_REQUESTS: Slow down." in job["last_error"]
    assert expo_env.received == {}
    assert await statuses(conn) == {"pending": 3}
    paused_for = await conn.fetchval(
        "SELECT extract(epoch FROM paused_until - now()) FROM jobrunner_limit_state WHERE job_type = $1",
        "send_notification",
    )
    assert paused_for > 55


async def test_the_receipts_job_records_receipts_and_deactivates_unregistered_tokens(
    db_url: str, conn: asyncpg.Connection, expo_env: FakeExpo, clean_app_env: pytest.MonkeyPatch
) -> None:
    clean_app_env.setenv("JOBRUNNER_APP_EXPO_RECEIPTS_BATCH_SIZE", "2")
    tokens = await add_tokens(conn, ALICE, 5)
    expo_env.unregistered_at_receipt.add(tokens[1])
    expo_env.receipts_not_ready.add(tokens[4])
    sent = await run(db_url, conn, "send_notification", {**MESSAGE, "user_id": str(ALICE)})
    assert sent["status"] == "completed", sent["last_error"]
    receipts_job = json.loads(sent["result"])["receipts_job_id"]
    await conn.execute("UPDATE background_jobs SET scheduled_at = now() WHERE id = $1", receipts_job)
    async with running_daemon(db_url, [check_push_receipts], burst=True):
        pass
    job = await job_row(conn, receipts_job)
    assert job["status"] == "completed", job["last_error"]
    assert [len(ids) for ids in expo_env.receipt_requests] == [2, 2, 1]
    result = json.loads(job["result"])
    assert (result["checked"], result["errors"], result["not_ready"], result["deactivated_tokens"]) == (4, 1, 1, 1)
    rows = await conn.fetch(
        "SELECT push_token, receipt_status, receipt_error_code, receipt_checked_at IS NOT NULL AS checked "
        "FROM notifications ORDER BY push_token"
    )
    assert [(r["receipt_status"], r["receipt_error_code"]) for r in rows] == [
        ("ok", None),
        ("error", "DeviceNotRegistered"),
        ("ok", None),
        ("ok", None),
        (None, None),
    ]
    assert await conn.fetchval("SELECT active FROM push_tokens WHERE token = $1", tokens[1]) is False
    # the receipt not ready yet is looked for again later
    follow_up = await conn.fetchrow(
        "SELECT payload FROM background_jobs WHERE job_type = 'check_push_receipts' AND id <> $1", receipts_job
    )
    assert json.loads(follow_up["payload"]) == {"job_id": sent["id"], "round": 2}


async def test_a_bad_push_url_fails_the_jobs_naming_the_setting_and_the_daemon_starts(
    db_url: str, conn: asyncpg.Connection, clean_app_env: pytest.MonkeyPatch
) -> None:
    clean_app_env.setenv("JOBRUNNER_APP_EXPO_PUSH_URL", "http://push.internal/--/api/v2/push")
    await add_tokens(conn, ALICE, 1)
    job_id = await conn.fetchval(
        "SELECT enqueue_job('send_notification', $1::jsonb)", json.dumps({"user_id": str(ALICE), "body": "x"})
    )
    with structlog.testing.capture_logs() as logs:
        async with running_daemon(db_url, [send_notification], burst=True):
            pass
    job = await job_row(conn, job_id)
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert "Expo push is not configured: JOBRUNNER_APP_EXPO_PUSH_URL must be an https URL" in job["last_error"]
    warnings = [e for e in logs if e["event"].startswith("handler not configured")]
    assert [e["job_type"] for e in warnings] == ["send_notification"]
    assert await conn.fetchval("SELECT count(*) FROM notifications") == 0


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"body": "x"}, "name the recipients: user_id or user_ids"),
        ({"user_id": str(ALICE)}, "a notification needs a title or a body"),
        ({"user_id": str(ALICE), "body": "x", "data": {"blob": "y" * 5000}}, "5050 bytes: over Expo's 4096-byte limit"),
    ],
    ids=["no-recipients", "empty", "too-big"],
)
async def test_bad_payloads_fail_without_sending(
    db_url: str, conn: asyncpg.Connection, expo_env: FakeExpo, payload: dict[str, Any], error: str
) -> None:
    job = await run(db_url, conn, "send_notification", payload)
    assert job["status"] == "failed" and error in job["last_error"]
    assert expo_env.send_requests == []
