"""analyze_image: score a user's photo (glow or style) with an OpenAI vision model.

One attempt:

1. downloads the image through the SSRF-safe StorageClient (configured host only, 5 MB cap,
   only the image types OpenAI's vision input takes), from the user's own folder;
2. looks up `ai_response_cache` under sha256(image bytes + user id + kind); a live entry is the
   reply, and OpenAI is not called;
3. on a miss asks OpenAI (the official SDK, chat completions with the image as a base64 data URL
   and a strict JSON schema for the reply) and validates the reply with pydantic;
4. in one transaction: the analysis row, a `generate_recommendations` job for the user, and the
   cache entry. Either all three are there or none is. The recommendations job depends on this
   one (`depends_on`, a job flow): it stays `blocked` until this job's outcome is written, runs
   when it completed (reading the analysis from `ctx.parents()`), and is cancelled when this job
   ends failed, dead or cancelled instead (an attempt that wrote the analysis and then lost its
   outcome, retried until dead). docs/app/index.md says why the flow starts here and not in
   the request that enqueues the analysis.

Enqueue it with `concurrency_key=<user id>`: the declared limits then also hold each user to
`per_key_max_running` analyses at once, served round robin, so one user's burst of uploads
cannot take every slot (jobs without a key are only held to the global rate).

Errors, and why each is retried or not:

* 429 and 5xx (and connection errors, 408/409, which the SDK itself also treats as transient):
  retried inside the attempt (tenacity; the SDK's own retries are off) waiting what Retry-After
  says, or a short jittered backoff without one, as long as the wait is at most
  `openai_max_inline_wait`. A longer Retry-After ends the attempt: a 429 raises
  UpstreamRateLimited (the type pauses on every replica, since every replica shares the key's
  limit), a 5xx RetryLater. 429s that outlast the tries pause the type for
  `openai_rate_limit_pause`; 5xx that outlast them take the job's backoff.
* any other 4xx (bad request, bad key, unknown model, an image OpenAI cannot read): the same
  request will be refused again, so the job fails at once with the API's own message.
* a reply that is not the JSON we asked for (cut off at the token limit, not JSON, out of the
  schema): sampling differs between calls, so the job is retried once; a second bad reply in a
  row means something systematic (model, gateway, prompt) that more tries would only pay tokens
  for, so the job then fails. A refusal from the model fails it at once.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobrunner import GlobalLimits, JobContext, PermanentError, RetryLater, UpstreamRateLimited, handler
from jobrunner_handlers.deferred_import import import_off_loop
from jobrunner_handlers.queries import sql
from jobrunner_handlers.recommendations import RecommendationsPayload, generate_recommendations
from jobrunner_handlers.settings import AppSettings, app_settings, openai_startup_check
from jobrunner_handlers.storage import StorageClient, check_object_path

# openai and tenacity are imported by the functions that call them, once ask_openai has loaded
# the SDK off the event loop (deferred_import)
if TYPE_CHECKING:
    import openai
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
    from openai.types.shared_params import ResponseFormatJSONSchema
    from tenacity import RetryCallState

Kind = Literal["glow", "style"]

# the areas each kind scores; the recommender matches them against products' target_areas
AREAS: dict[str, tuple[str, ...]] = {
    "glow": ("hydration", "texture", "radiance", "tone", "clarity", "firmness"),
    "style": ("color_harmony", "fit", "proportion", "coherence", "grooming"),
}
# what OpenAI's image input accepts (Storage also allows HEIC, which it does not)
OPENAI_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
# a bad reply is retried this many attempts in all, then the job fails
MALFORMED_REPLY_ATTEMPTS = 2
# HTTP statuses worth another try: the SDK's own list (408 timeout, 409 lock conflict, 429, 5xx)
_TRANSIENT_STATUSES = frozenset({408, 409, 429})

SYSTEM_PROMPTS: dict[str, str] = {
    "glow": (
        "You assess skin glow from a selfie for a beauty app. Score each listed area from 0 (poor) to "
        "100 (excellent) from what is visible, with one short, kind, practical piece of advice per area, "
        "and an overall score. Do not guess at medical conditions."
    ),
    "style": (
        "You assess the style of an outfit photo for a beauty and style app. Score each listed area from "
        "0 to 100, with one short, practical piece of advice per area, an overall score, and a few "
        "keywords describing the style."
    ),
}


class AnalyzePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: UUID
    # an object path in the uploads bucket (`<user id>/...`), or a Storage object URL on the
    # configured Supabase host in the uploads or thumbnails bucket
    image: str = Field(min_length=1, max_length=2048)
    kind: Kind


class AreaResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    area: str
    score: float = Field(ge=0, le=100)
    advice: str = Field(max_length=500)


class AnalysisReply(BaseModel):
    """The model's reply, as the JSON schema below asks for it."""

    model_config = ConfigDict(extra="forbid")
    overall_score: float = Field(ge=0, le=100)
    areas: list[AreaResult] = Field(min_length=1, max_length=20)
    summary: str = Field(max_length=2000)
    style_keywords: list[str] = Field(default_factory=list, max_length=20)


class MalformedModelReply(Exception):
    """The model answered, but not with the JSON we asked for."""


class OpenAIUnavailable(Exception):
    """5xx or connection failures outlasted the tries inside one attempt: the job's backoff follows."""


@dataclass(frozen=True)
class TokenUsage:
    prompt: int = 0
    completion: int = 0
    total: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt, "completion_tokens": self.completion, "total_tokens": self.total}


def reply_schema(kind: str) -> dict[str, Any]:
    """The strict JSON schema of the reply (strict mode: every property required, no others)."""
    area = {
        "type": "object",
        "properties": {
            "area": {"type": "string", "enum": list(AREAS[kind])},
            "score": {"type": "number", "description": "0 to 100"},
            "advice": {"type": "string", "description": "one short sentence"},
        },
        "required": ["area", "score", "advice"],
        "additionalProperties": False,
    }
    properties: dict[str, Any] = {
        "overall_score": {"type": "number", "description": "0 to 100"},
        "areas": {"type": "array", "items": area},
        "summary": {"type": "string", "description": "two sentences at most"},
    }
    if kind == "style":
        properties["style_keywords"] = {"type": "array", "items": {"type": "string"}}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def parse_reply(kind: str, content: str | None) -> AnalysisReply:
    if not content:
        raise MalformedModelReply("the model's reply is empty")
    try:
        reply = AnalysisReply.model_validate_json(content)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(reply)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise MalformedModelReply(f"the model's reply is not the requested JSON: {problems}") from exc
    names = [item.area for item in reply.areas]
    unknown = sorted(set(names) - set(AREAS[kind]))
    if unknown:
        raise MalformedModelReply(f"the model's reply scores unknown {kind} areas: {', '.join(unknown)}")
    if len(set(names)) != len(names):
        raise MalformedModelReply("the model's reply scores an area twice")
    return reply


def cache_key(image: bytes, user_id: UUID, kind: str) -> str:
    # the image's bytes, not its URL: docs/app/maintenance.md says why. A fixed-length user id and
    # a closed set of kinds: the concatenation is unambiguous
    return hashlib.sha256(image + user_id.bytes + kind.encode()).hexdigest()


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After (seconds or an HTTP date) or OpenAI's retry-after-ms; None without one."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def api_message(exc: openai.APIStatusError) -> str:
    """The API's own error message (`{"error": {"message": ...}}`), else the SDK's text."""
    body = exc.body
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return exc.message


def _is_transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIStatusError):
        if isinstance(exc.body, dict) and exc.body.get("code") == "insufficient_quota":
            return False  # billing: no wait inside an attempt will change it
        return exc.status_code in _TRANSIENT_STATUSES or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)  # includes timeouts


class _Backoff:
    """tenacity wait: the upstream's Retry-After when it gave one, else a jittered doubling."""

    def __init__(self, initial: float) -> None:
        self.initial = initial

    def __call__(self, state: RetryCallState) -> float:
        import openai

        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, openai.APIStatusError):
            seconds = retry_after_seconds(exc.response.headers)
            if seconds is not None:
                return seconds
        ceiling = self.initial * 2.0 ** (state.attempt_number - 1)
        return ceiling / 2 + random.random() * ceiling / 2


class _StopAfter:
    """Stop when the tries are used up, or when the next wait is longer than we wait in-attempt."""

    def __init__(self, tries: int, max_wait: float) -> None:
        self.tries = tries
        self.max_wait = max_wait

    def __call__(self, state: RetryCallState) -> bool:
        return state.attempt_number >= self.tries or state.upcoming_sleep > self.max_wait


def openai_client(settings: AppSettings) -> AsyncOpenAI:
    from openai import AsyncOpenAI

    key = settings.effective_openai_api_key
    assert key is not None
    return AsyncOpenAI(
        api_key=key.get_secret_value(),
        base_url=settings.openai_base_url,
        timeout=settings.openai_timeout,
        max_retries=0,  # retries are ours: tenacity inside the attempt, the queue beyond it
    )


def _messages(kind: str, image: bytes, content_type: str) -> list[ChatCompletionMessageParam]:
    data_url = f"data:{content_type};base64,{base64.b64encode(image).decode()}"
    return [
        {"role": "system", "content": SYSTEM_PROMPTS[kind]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"Score the {kind} areas: {', '.join(AREAS[kind])}."},
                {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}},
            ],
        },
    ]


async def ask_openai(
    ctx: JobContext[AnalyzePayload], settings: AppSettings, image: bytes, content_type: str
) -> ChatCompletion:
    """The completion; raises the job-level outcome (UpstreamRateLimited, RetryLater,
    PermanentError, OpenAIUnavailable) when the calls inside this attempt did not get one."""
    await import_off_loop("openai")
    import openai
    from tenacity import AsyncRetrying, retry_if_exception

    kind = ctx.payload.kind
    response_format: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {"name": f"{kind}_analysis", "strict": True, "schema": reply_schema(kind)},
    }

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        ctx.log.warning("OpenAI call failed, retrying", error=str(exc), wait=round(state.upcoming_sleep, 3))

    client = openai_client(settings)
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            wait=_Backoff(settings.openai_retry_initial_wait),
            stop=_StopAfter(settings.openai_request_tries, settings.openai_max_inline_wait),
            before_sleep=log_retry,
            reraise=True,
        ):
            with attempt:
                return await client.chat.completions.create(
                    model=settings.openai_model,
                    messages=_messages(kind, image, content_type),
                    response_format=response_format,
                    max_completion_tokens=settings.openai_max_completion_tokens,
                )
    except openai.APIStatusError as exc:
        raise _job_outcome(exc, settings) from exc
    except openai.APIConnectionError as exc:
        raise OpenAIUnavailable(f"OpenAI could not be reached: {exc}") from exc
    finally:
        await client.close()
    raise AssertionError("unreachable: tenacity returns or raises")


def token_usage(completion: ChatCompletion) -> TokenUsage:
    usage = completion.usage
    return TokenUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) if usage else TokenUsage()


def reply_of(kind: str, completion: ChatCompletion, settings: AppSettings) -> AnalysisReply:
    if not completion.choices:
        raise MalformedModelReply("the model's reply has no choices")
    choice = completion.choices[0]
    if choice.message.refusal:
        raise PermanentError(f"the model refused to analyse the image: {choice.message.refusal}")
    if choice.finish_reason == "length":
        raise MalformedModelReply(
            f"the model's reply was cut off at the token limit ({settings.openai_max_completion_tokens})"
        )
    return parse_reply(kind, choice.message.content)


def _job_outcome(exc: openai.APIStatusError, settings: AppSettings) -> Exception:
    """What an OpenAI error that ended the tries does to the job."""
    status = exc.status_code
    message = api_message(exc)
    waited = retry_after_seconds(exc.response.headers)
    if status == 429:
        # a long Retry-After is the upstream's word; 429s that outlasted our tries pause a while
        long_wait = waited is not None and waited > settings.openai_max_inline_wait
        pause = waited if waited is not None and long_wait else max(waited or 0.0, settings.openai_rate_limit_pause)
        return UpstreamRateLimited(pause, f"OpenAI rate limit (429): {message}")
    if _is_transient(exc):
        if waited is not None and waited > settings.openai_max_inline_wait:
            return RetryLater(waited, f"OpenAI unavailable ({status}): {message}")
        return OpenAIUnavailable(f"OpenAI unavailable ({status}): {message}")
    code = f" {exc.code}" if exc.code else ""
    return PermanentError(f"OpenAI refused the request ({status}{code}): {message}")


def _image_location(storage: StorageClient, image: str, settings: AppSettings) -> tuple[str, str]:
    """(bucket, path) of the image: a path in the uploads bucket, or a Storage URL naming one of
    the buckets users' photos are in (uploads, thumbnails). The URL form must not let a payload
    read the archive or any other bucket with the service key."""
    if "://" not in image:
        return settings.uploads_bucket, check_object_path(image)
    bucket, path = storage.parse_object_url(image)
    readable = sorted({settings.uploads_bucket, settings.thumbnails_bucket or settings.uploads_bucket})
    if bucket not in readable:
        raise PermanentError(
            f"image URL refused: the bucket {bucket!r} is not one analyze_image reads from ({', '.join(readable)})"
        )
    return bucket, path


@handler(
    "analyze_image",
    payload_model=AnalyzePayload,
    timeout=300,
    startup_check=openai_startup_check,
    # the app's documented OpenAI budget (100 analyses a minute), shared by every replica; and per
    # user (concurrency_key) at most two at once
    limits=GlobalLimits(rate=100, per_seconds=60, per_key_max_running=2),
)
async def analyze_image(ctx: JobContext[AnalyzePayload]) -> dict[str, Any]:
    settings = app_settings()
    settings.require_openai()
    settings.require_storage()
    user_id, kind = ctx.payload.user_id, ctx.payload.kind
    async with StorageClient.from_settings(settings) as storage:
        bucket, path = _image_location(storage, ctx.payload.image, settings)
        if path.split("/", 1)[0] != str(user_id):
            raise PermanentError(f"image {bucket}/{path} is not in the user's folder {user_id}/")
        image = await storage.download(bucket, path, content_types=OPENAI_IMAGE_TYPES)

    key = cache_key(image.data, user_id, kind)
    reply: AnalysisReply | None = None
    model = settings.openai_model
    cached = await ctx.pool.fetchrow(sql("ai_cache_hit"), key)
    if cached is not None:
        try:
            reply = parse_reply(kind, cached["response"])
            model = str(cached["model"] or model)
        except MalformedModelReply:
            ctx.log.warning("cached reply no longer valid: asking again")
    cache_hit = reply is not None
    usage = TokenUsage()
    ctx.report_usage("ai_cache_hit" if cache_hit else "ai_cache_miss", 1)
    if reply is None:
        completion = await ask_openai(ctx, settings, image.data, image.content_type)
        model = completion.model or model
        usage = token_usage(completion)
        # the tokens are spent whether or not the reply is usable
        ctx.report_usage("openai_prompt_tokens", usage.prompt)
        ctx.report_usage("openai_completion_tokens", usage.completion)
        ctx.report_usage("openai_total_tokens", usage.total)
        try:
            reply = reply_of(kind, completion, settings)
        except MalformedModelReply as exc:
            if ctx.attempt >= MALFORMED_REPLY_ATTEMPTS:
                raise PermanentError(f"{exc} ({ctx.attempt} unusable replies in a row)") from exc
            raise

    area_scores = {item.area: item.score for item in reply.areas}
    advice = {"summary": reply.summary, "areas": {item.area: item.advice for item in reply.areas}}
    score = Decimal(str(round(reply.overall_score, 2)))
    created_at = ctx.job.created_at
    follow_up: int | None = None
    async with ctx.transaction() as tx:
        args = (user_id, ctx.payload.image, score, json.dumps(area_scores), json.dumps(advice), model, ctx.job.id)
        if kind == "glow":
            analysis_id = await tx.fetchval(sql("insert_glow_analysis"), *args, created_at)
        else:
            attributes = json.dumps({"keywords": reply.style_keywords})
            analysis_id = await tx.fetchval(sql("insert_style_analysis"), *args, created_at, attributes)
        if analysis_id is None:
            # an earlier attempt of this job committed all of this already
            analysis_id = await tx.fetchval(sql(f"{kind}_analysis_of_job"), ctx.job.id, created_at)
        else:
            # the recommendations wait for this job (a job flow): they run once its outcome is
            # written as completed, and are cancelled if it ends otherwise. A retry that finds
            # the analysis written (above) enqueues none: one set per analysis
            follow_up = await generate_recommendations.enqueue(
                ctx,
                RecommendationsPayload(user_id=user_id),
                connection=tx,
                concurrency_key=str(user_id),
                depends_on=[ctx.job.id],
            )
        if not cache_hit:
            await tx.execute(
                sql("ai_cache_store"),
                key,
                user_id,
                kind,
                model,
                reply.model_dump_json(),
                usage.prompt,
                usage.completion,
                settings.ai_cache_ttl_seconds,
            )
    ctx.log.info("image analysed", kind=kind, cache_hit=cache_hit, score=float(score), **usage.as_dict())
    return {
        "analysis_id": str(analysis_id),
        "kind": kind,
        "overall_score": float(score),
        "area_scores": area_scores,
        "model": model,
        "cache": "hit" if cache_hit else "miss",
        "usage": usage.as_dict(),
        "recommendations_job_id": follow_up,
    }
