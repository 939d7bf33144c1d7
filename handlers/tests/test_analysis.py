"""analyze_image through the real daemon, the real `openai` SDK against a local OpenAI server, the
local Storage server and the real database."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import structlog
from PIL import Image

from handlers.tests.fake_openai import FakeOpenAI, api_error, rate_limited, reply, server_error
from handlers.tests.fake_storage import FakeStorage
from handlers.tests.test_schema import ALICE, BOB
from jobrunner_handlers.analysis import AREAS, MalformedModelReply, analyze_image, parse_reply, reply_schema
from jobrunner_handlers.recommendations import generate_recommendations
from tests.support import job_row, running_daemon

IMAGE_PATH = f"{ALICE}/2025/selfie.jpg"


def jpeg(color: tuple[int, int, int] = (200, 120, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, format="JPEG", quality=85)
    return out.getvalue()


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openai_env(app_env: FakeStorage, openai_server: FakeOpenAI, clean_app_env: pytest.MonkeyPatch) -> FakeOpenAI:
    clean_app_env.setenv("OPENAI_API_KEY", openai_server.api_key)
    clean_app_env.setenv("JOBRUNNER_APP_OPENAI_BASE_URL", openai_server.base_url)
    clean_app_env.setenv("JOBRUNNER_APP_OPENAI_RETRY_INITIAL_WAIT", "0.05")
    clean_app_env.setenv("JOBRUNNER_APP_OPENAI_MAX_INLINE_WAIT", "2")
    app_env.put("user-uploads", IMAGE_PATH, jpeg())
    return openai_server


async def enqueue(conn: asyncpg.Connection, payload: dict[str, Any], max_attempts: int = 5) -> int:
    job_id: int = await conn.fetchval(
        "SELECT enqueue_job('analyze_image', $1::jsonb, max_attempts => $2, concurrency_key => $3)",
        json.dumps(payload),
        max_attempts,
        payload.get("user_id"),
    )
    return job_id


async def run(db_url: str, conn: asyncpg.Connection, job_id: int) -> dict[str, Any]:
    async with running_daemon(db_url, [analyze_image], burst=True):
        pass
    return dict(await job_row(conn, job_id))


GLOW = {"user_id": str(ALICE), "image": IMAGE_PATH, "kind": "glow"}


async def follow_ups(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT payload->>'user_id', concurrency_key FROM background_jobs "
        "WHERE job_type = 'generate_recommendations' ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def test_an_analysis_is_written_with_its_follow_up_cache_entry_and_token_usage(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI
) -> None:
    job_id = await enqueue(conn, GLOW)
    async with running_daemon(db_url, [analyze_image], burst=True) as daemon:
        pass
    job = await job_row(conn, job_id)
    assert job["status"] == "completed", job["last_error"]
    result = json.loads(job["result"])
    assert result["cache"] == "miss"
    assert result["usage"] == {"prompt_tokens": 1234, "completion_tokens": 156, "total_tokens": 1390}

    [request] = openai_env.requests
    assert request.image_bytes == jpeg()  # the image went as a base64 data URL
    body = request.body
    assert body["model"] == "gpt-4o-mini"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    image_part = body["messages"][1]["content"][1]
    assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,")

    row = await conn.fetchrow("SELECT * FROM glow_analyses")
    assert str(row["id"]) == result["analysis_id"]
    assert (row["user_id"], row["source_job_id"], row["created_at"]) == (ALICE, job_id, job["created_at"])
    assert float(row["overall_score"]) == 62.0
    assert json.loads(row["area_scores"])["hydration"] == 40.0
    assert json.loads(row["advice"])["areas"]["texture"] == "Some advice about texture."
    assert row["model"] == openai_env.model
    # the follow-up job, for the user, with the user as its fairness key, waited for this job (a
    # job flow) and was released by its completion
    assert await follow_ups(conn) == [(str(ALICE), str(ALICE))]
    follow_up = await job_row(conn, result["recommendations_job_id"])
    assert (list(follow_up["depends_on"]), follow_up["waiting_on"], follow_up["parents_failed"]) == ([job_id], 0, 0)
    cache = await conn.fetchrow("SELECT * FROM ai_response_cache")
    assert (cache["user_id"], cache["kind"], cache["prompt_tokens"], cache["completion_tokens"]) == (
        ALICE,
        "glow",
        1234,
        156,
    )
    assert 3500 < (cache["expires_at"] - cache["created_at"]).total_seconds() <= 3600

    def usage(kind: str) -> float | None:
        return daemon.metrics.registry.get_sample_value(
            "jobrunner_upstream_usage_total", {"job_type": "analyze_image", "kind": kind}
        )

    assert (usage("openai_prompt_tokens"), usage("openai_completion_tokens"), usage("ai_cache_miss")) == (
        1234,
        156,
        1,
    )
    assert usage("ai_cache_hit") is None


async def test_the_recommendations_wait_for_the_analysis_and_read_it(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI
) -> None:
    job_id = await enqueue(conn, GLOW)
    # both handlers in one daemon: the recommendations cannot start before the analysis's
    # outcome is written, and then know which analysis they were asked for
    async with running_daemon(db_url, [analyze_image, generate_recommendations], burst=True):
        pass
    analysis = json.loads((await job_row(conn, job_id))["result"])
    follow_up = await job_row(conn, analysis["recommendations_job_id"])
    assert follow_up["status"] == "completed", follow_up["last_error"]
    # released by its parent's completion: no parent left to wait for, none failed
    assert (follow_up["waiting_on"], follow_up["parents_failed"]) == (0, 0)
    # it started after the analysis's outcome was written: it read the parent as completed,
    # with its result (`requested_by` names only completed analyze_image parents). Not
    # started_at >= finished_at: both are their transactions' start times, and a claim that
    # began just before the outcome's transaction can still see the released job in a later
    # statement of its own
    assert json.loads(follow_up["result"])["requested_by"] == [analysis["analysis_id"]]


async def test_an_analysis_that_ends_unsuccessfully_cancels_its_recommendations(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI
) -> None:
    # the analysis is written, then its job ends dead anyway (its completion was lost and the
    # retries failed): the flow's rule cancels the recommendations waiting for it
    job_id = await enqueue(conn, GLOW)
    await conn.execute(
        "CREATE FUNCTION lose_completion() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.status = 'completed' THEN NEW.status := 'dead'; NEW.last_error := 'lost'; END IF;"
        " RETURN NEW; END $$;"
        "CREATE TRIGGER lose_completion BEFORE UPDATE OF status ON background_jobs FOR EACH ROW"
        " WHEN (NEW.job_type = 'analyze_image') EXECUTE FUNCTION lose_completion()"
    )
    job = await run(db_url, conn, job_id)
    assert job["status"] == "dead"
    assert await conn.fetchval("SELECT count(*) FROM glow_analyses") == 1
    follow_up = await conn.fetchrow(
        "SELECT status, last_error FROM background_jobs WHERE job_type = 'generate_recommendations'"
    )
    assert follow_up is not None
    assert (follow_up["status"], follow_up["last_error"]) == ("cancelled", f"cancelled: parent job {job_id} ended dead")


async def test_a_cache_hit_makes_no_openai_call(db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI) -> None:
    first = await run(db_url, conn, await enqueue(conn, GLOW))
    assert first["status"] == "completed", first["last_error"]
    openai_env.requests.clear()
    again = await run(db_url, conn, await enqueue(conn, GLOW))
    assert again["status"] == "completed", again["last_error"]
    assert openai_env.requests == []
    result = json.loads(again["result"])
    assert result["cache"] == "hit" and result["usage"]["total_tokens"] == 0
    assert result["area_scores"] == json.loads(first["result"])["area_scores"]
    assert await conn.fetchval("SELECT hit_count FROM ai_response_cache") == 1
    assert await conn.fetchval("SELECT count(*) FROM glow_analyses") == 2
    assert len(await follow_ups(conn)) == 2
    # another kind, or another user's same bytes, is another key
    openai_env.requests.clear()
    await run(db_url, conn, await enqueue(conn, {**GLOW, "kind": "style"}))
    assert len(openai_env.requests) == 1
    style = await conn.fetchrow("SELECT style_attributes, area_scores FROM style_analyses")
    assert json.loads(style["style_attributes"]) == {"keywords": ["minimal", "warm tones"]}
    assert "color_harmony" in json.loads(style["area_scores"])


async def test_an_expired_cache_entry_is_asked_again(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI
) -> None:
    await run(db_url, conn, await enqueue(conn, GLOW))
    await conn.execute("UPDATE ai_response_cache SET expires_at = now() - interval '1 second'")
    job = await run(db_url, conn, await enqueue(conn, GLOW))
    assert json.loads(job["result"])["cache"] == "miss"
    assert len(openai_env.requests) == 2
    assert await conn.fetchval("SELECT count(*) FROM ai_response_cache WHERE expires_at > now()") == 1


async def test_a_429_with_retry_after_is_waited_out_inside_the_attempt(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI
) -> None:
    openai_env.script = [rate_limited(0.3)]
    job = await run(db_url, conn, await enqueue(conn, GLOW))
    assert job["status"] == "completed", job["last_error"]
    assert job["attempts"] == 1
    first, second = openai_env.requests
    assert second.at - first.at >= 0.3
    assert (
        await conn.fetchval("SELECT paused_until FROM jobrunner_limit_state WHERE job_type = 'analyze_image'") is None
    )


async def test_a_500_is_retried_inside_the_attempt(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI
) -> None:
    openai_env.script = [server_error(500), server_error(503)]
    job = await run(db_url, conn, await enqueue(conn, GLOW))
    assert job["status"] == "completed", job["last_error"]
    assert (job["attempts"], len(openai_env.requests)) == (1, 3)


@pytest.mark.parametrize(
    ("retry_after", "requests", "paused_at_least"),
    [(60.0, 1, 55.0), (0.05, 3, 25.0)],
    ids=["long-retry-after", "short-retry-after-outlasting-the-tries"],
)
async def test_persistent_429s_send_the_job_back_and_pause_the_type_everywhere(
    db_url: str,
    conn: asyncpg.Connection,
    openai_env: FakeOpenAI,
    retry_after: float,
    requests: int,
    paused_at_least: float,
) -> None:
    openai_env.always = rate_limited(retry_after)
    job_id = await enqueue(conn, GLOW)
    job = await run(db_url, conn, job_id)
    assert (job["status"], job["attempts"]) == ("pending", 1)
    assert "UpstreamRateLimited: OpenAI rate limit (429): Rate limit reached for gpt-4o-mini" in job["last_error"]
    assert len(openai_env.requests) == requests  # a long Retry-After is not waited inside the attempt
    paused_for = await conn.fetchval(
        "SELECT extract(epoch FROM paused_until - now()) FROM jobrunner_limit_state WHERE job_type = 'analyze_image'"
    )
    assert paused_for > paused_at_least
    scheduled_in = await conn.fetchval(
        "SELECT extract(epoch FROM scheduled_at - now()) FROM background_jobs WHERE id = $1", job_id
    )
    assert scheduled_in > paused_at_least
    assert await follow_ups(conn) == []


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            api_error(400, "Invalid image: the image data you provided does not represent a valid image.", code="x"),
            "OpenAI refused the request (400 x): Invalid image: the image data you provided does not represent",
        ),
        (
            api_error(404, "The model `gpt-9` does not exist or you do not have access to it.", code="model_not_found"),
            "OpenAI refused the request (404 model_not_found): The model `gpt-9` does not exist",
        ),
    ],
    ids=["400", "404"],
)
async def test_other_4xx_fail_the_job_with_the_apis_message(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI, answer: Any, message: str
) -> None:
    openai_env.script = [answer]
    job = await run(db_url, conn, await enqueue(conn, GLOW))
    assert (job["status"], job["attempts"], len(openai_env.requests)) == ("failed", 1, 1)
    assert message in job["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM glow_analyses") == 0
    assert await follow_ups(conn) == []


async def test_a_malformed_reply_is_retried_once_then_fails(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI
) -> None:
    out_of_range = json.dumps({"overall_score": 150, "areas": [], "summary": "x"})
    openai_env.script = [reply('{"overall_score": 70, "areas": [{"area": "hydr'), reply(out_of_range)]
    job_id = await enqueue(conn, GLOW)
    job = await run(db_url, conn, job_id)  # the retry's backoff is within the burst's wait
    assert (job["status"], job["attempts"], len(openai_env.requests)) == ("failed", 2, 2)
    assert (
        "the model's reply is not the requested JSON: overall_score: Input should be less than or equal to 100"
        in (job["last_error"])
    )
    assert "2 unusable replies in a row" in job["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM ai_response_cache") == 0


async def test_a_malformed_reply_then_a_good_one_completes(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI
) -> None:
    openai_env.script = [reply("not json at all")]
    job = await run(db_url, conn, await enqueue(conn, GLOW))
    assert (job["status"], job["attempts"]) == ("completed", 2)
    assert await conn.fetchval("SELECT count(*) FROM glow_analyses") == 1


async def test_a_failed_write_leaves_no_follow_up_and_a_retry_writes_once(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI
) -> None:
    # the cache entry is the transaction's last write: when it fails, the analysis row and the
    # follow-up job written before it must go too
    await conn.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;"
        "CREATE TRIGGER refuse BEFORE INSERT ON ai_response_cache FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    job_id = await enqueue(conn, GLOW, max_attempts=1)
    job = await run(db_url, conn, job_id)
    assert job["status"] == "dead" and "disk full" in job["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM glow_analyses") == 0
    assert await follow_ups(conn) == []

    await conn.execute("DROP TRIGGER refuse ON ai_response_cache")
    await conn.execute("UPDATE background_jobs SET status = 'pending', max_attempts = 5 WHERE id = $1", job_id)
    job = await run(db_url, conn, job_id)
    assert job["status"] == "completed", job["last_error"]
    analysis_id = json.loads(job["result"])["analysis_id"]
    # an attempt whose commit happened but whose completion was lost runs again: same row, no
    # second follow-up (and no OpenAI call: the cache has it)
    await conn.execute("UPDATE background_jobs SET status = 'pending' WHERE id = $1", job_id)
    requests = len(openai_env.requests)
    again = await run(db_url, conn, job_id)
    assert again["status"] == "completed", again["last_error"]
    assert json.loads(again["result"])["analysis_id"] == analysis_id
    assert json.loads(again["result"])["recommendations_job_id"] is None
    assert len(openai_env.requests) == requests
    assert await conn.fetchval("SELECT count(*) FROM glow_analyses") == 1
    assert len(await follow_ups(conn)) == 1


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (f"{BOB}/selfie.jpg", "is not in the user's folder"),
        ("https://169.254.169.254/storage/v1/object/public/user-uploads/x.jpg", "refusing to fetch"),
        ("https://evil.example/storage/v1/object/public/user-uploads/x.jpg", "only the configured Storage host"),
        (f"{ALICE}/selfie.heic", "content type 'image/heic' is not an accepted image type"),
    ],
    ids=["other-users-folder", "metadata-address", "other-host", "heic"],
)
async def test_images_that_may_not_be_fetched_fail_without_an_openai_call(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI, app_env: FakeStorage, image: str, error: str
) -> None:
    app_env.put("user-uploads", f"{ALICE}/selfie.heic", b"\0\0\0\x18ftypheic", "image/heic")
    job = await run(db_url, conn, await enqueue(conn, {**GLOW, "image": image}))
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert error in job["last_error"]
    assert openai_env.requests == []


async def test_an_image_given_by_storage_url(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI, app_env: FakeStorage
) -> None:
    url = f"{app_env.url}/storage/v1/object/public/user-uploads/{IMAGE_PATH}"
    job = await run(db_url, conn, await enqueue(conn, {**GLOW, "image": url}))
    assert job["status"] == "completed", job["last_error"]
    assert openai_env.requests[0].image_bytes == jpeg()


@pytest.mark.parametrize("bucket", ["archive", "private-documents", "avatars"])
async def test_a_storage_url_may_name_only_the_configured_buckets(
    db_url: str, conn: asyncpg.Connection, openai_env: FakeOpenAI, app_env: FakeStorage, bucket: str
) -> None:
    # the object exists, in the user's own folder, on the Storage host: only the bucket is wrong
    app_env.put(bucket, IMAGE_PATH, jpeg())
    url = f"{app_env.url}/storage/v1/object/authenticated/{bucket}/{IMAGE_PATH}"
    job = await run(db_url, conn, await enqueue(conn, {**GLOW, "image": url}))
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert f"the bucket {bucket!r} is not one analyze_image reads from (user-uploads)" in job["last_error"]
    assert not [request for request in app_env.requests if request[0] == "GET"]
    assert openai_env.requests == []


async def test_a_storage_url_in_the_configured_thumbnails_bucket_is_read(
    db_url: str,
    conn: asyncpg.Connection,
    openai_env: FakeOpenAI,
    app_env: FakeStorage,
    clean_app_env: pytest.MonkeyPatch,
) -> None:
    clean_app_env.setenv("JOBRUNNER_APP_THUMBNAILS_BUCKET", "thumbs")
    app_env.put("thumbs", IMAGE_PATH, jpeg())
    url = f"{app_env.url}/storage/v1/object/public/thumbs/{IMAGE_PATH}"
    job = await run(db_url, conn, await enqueue(conn, {**GLOW, "image": url}))
    assert job["status"] == "completed", job["last_error"]
    assert openai_env.requests[0].image_bytes == jpeg()


async def test_without_an_openai_key_jobs_fail_naming_it_and_the_daemon_starts(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage
) -> None:
    job_id = await enqueue(conn, GLOW)
    with structlog.testing.capture_logs() as logs:
        async with running_daemon(db_url, [analyze_image], burst=True):
            pass
    job = await job_row(conn, job_id)
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert "OpenAI is not configured: OPENAI_API_KEY is not set" in job["last_error"]
    warnings = [e for e in logs if e["event"].startswith("handler not configured")]
    assert [(e["job_type"], e["problem"]) for e in warnings] == [("analyze_image", "OPENAI_API_KEY is not set")]


def test_the_reply_schema_is_strict() -> None:
    for kind in AREAS:
        schema = reply_schema(kind)
        assert schema["additionalProperties"] is False
        assert sorted(schema["required"]) == sorted(schema["properties"])
    elbows = {"overall_score": 1, "areas": [{"area": "elbows", "score": 1, "advice": ""}], "summary": ""}
    with pytest.raises(MalformedModelReply, match="scores unknown glow areas: elbows"):
        parse_reply("glow", json.dumps(elbows))
    twice = {**elbows, "areas": [{"area": "tone", "score": 1, "advice": ""}] * 2}
    with pytest.raises(MalformedModelReply, match="scores an area twice"):
        parse_reply("glow", json.dumps(twice))
