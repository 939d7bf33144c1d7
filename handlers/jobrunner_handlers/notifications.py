"""send_notification and check_push_receipts: Expo push notifications over its HTTP API (httpx).

Wire format (https://exp.host/--/api/v2/push/...; the base is `JOBRUNNER_APP_EXPO_PUSH_URL`):

* `POST /send` with a JSON list of at most 100 messages (`{"to", "title", "body", "data", ...}`)
  answers `{"data": [ticket, ...]}`, one ticket per message in order: `{"status": "ok", "id":
  RECEIPT_ID}` or `{"status": "error", "message": ..., "details": {"error": "DeviceNotRegistered"}}`;
* `POST /getReceipts` with `{"ids": [...]}` answers `{"data": {RECEIPT_ID: receipt}}` with
  receipts shaped like tickets (ids whose receipt is not ready yet are left out);
* a request refused as a whole answers non-200 with `{"errors": [{"code", "message"}]}`.

`Authorization: Bearer <token>` is sent only when an access token is configured (Expo's "enhanced
push security"); bodies over `expo_gzip_min_bytes` are gzip-compressed as Expo's own SDK does.

**At most once per token.** Each (job, token) is a row in `notifications`, written before anything
is sent. A batch is marked `sending` in a committed statement before its request, then settled
from the tickets (`sent` / `error`). When Expo refuses a request as a whole (429, 5xx, 401/403, or
no connection at all) nothing was sent: the rows go back to `pending` and the retried job sends
them. When the outcome is unknown (the connection broke after the request went out, a timeout
waiting for the answer, an answer we cannot match to the messages, or the worker died mid-request
and its rows were left `sending`), the rows become `unknown` and are **not** sent again: a user
missing one notification is better than a user getting it twice. `unknown` rows are counted in
the job's result.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobrunner import JobContext, PermanentError, RetryLater, UpstreamRateLimited, handler
from jobrunner_handlers.queries import sql
from jobrunner_handlers.settings import AppSettings, app_settings, expo_startup_check

# httpx is imported where a request is made: the daemon imports this module at start, and only
# a job that talks to Expo needs the client
if TYPE_CHECKING:
    import httpx

DEVICE_NOT_REGISTERED = "DeviceNotRegistered"
# Expo's limit on one notification's payload
MAX_PAYLOAD_BYTES = 4096
# how often check_push_receipts looks again for receipts Expo had not made yet
MAX_RECEIPT_ROUNDS = 3
DEFAULT_RATE_LIMIT_PAUSE = 30.0


class ExpoUnavailable(Exception):
    """Expo did not take the request (429, 5xx, no connection): nothing was sent, try later."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    def job_outcome(self) -> Exception:
        if self.status == 429:
            # the limit is the Expo project's, shared by every replica: pause the type everywhere
            return UpstreamRateLimited(self.retry_after or DEFAULT_RATE_LIMIT_PAUSE, str(self))
        if self.retry_after is not None:
            return RetryLater(self.retry_after, str(self))
        return RuntimeError(str(self))  # the job's backoff


class ExpoRejected(Exception):
    """Expo refused the request as a whole with a 4xx (other than 429): resending will not help."""

    def __init__(self, message: str, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def is_credentials(self) -> bool:
        return self.status in (401, 403)


class ExpoOutcomeUnknown(Exception):
    """The request may have reached Expo, but we have no usable answer."""


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _errors_text(body: Any) -> tuple[str | None, str]:
    """(first code, message) of Expo's `{"errors": [{"code", "message"}]}`."""
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        errors = [e for e in body["errors"] if isinstance(e, dict)]
        if errors:
            message = "; ".join(f"{e.get('code', 'ERROR')}: {e.get('message', '')}" for e in errors)
            code = errors[0].get("code")
            return (str(code) if code else None), message[:1000]
    return None, json.dumps(body)[:500]


class ExpoPushClient:
    """`async with ExpoPushClient.from_settings(settings) as expo: tickets = await expo.send(msgs)`."""

    def __init__(
        self,
        base_url: str,
        access_token: str | None = None,
        *,
        timeout: float = 30.0,
        gzip_min_bytes: int = 1024,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.gzip_min_bytes = gzip_min_bytes
        headers = {"accept": "application/json", "accept-encoding": "gzip, deflate"}
        if access_token:
            headers["authorization"] = f"Bearer {access_token}"
        # no proxy from the environment may see the access token
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout, transport=transport, trust_env=False)

    @classmethod
    def from_settings(cls, settings: AppSettings, transport: httpx.AsyncBaseTransport | None = None) -> ExpoPushClient:
        settings.require_expo()
        token = settings.expo_access_token.get_secret_value() if settings.expo_access_token else None
        return cls(
            settings.expo_push_url,
            token,
            timeout=settings.expo_timeout,
            gzip_min_bytes=settings.expo_gzip_min_bytes,
            transport=transport,
        )

    async def __aenter__(self) -> ExpoPushClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    async def _post(self, endpoint: str, body: Any) -> Any:
        """POST JSON, return the answer's `data`; raises ExpoUnavailable / ExpoRejected /
        ExpoOutcomeUnknown by whether the request can have been acted on."""
        import httpx

        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"}
        if len(raw) > self.gzip_min_bytes:
            raw = gzip.compress(raw)
            headers["content-encoding"] = "gzip"
        url = f"{self.base_url}/{endpoint}"
        try:
            response = await self._http.post(url, content=raw, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # the request never left: safe to send again
            raise ExpoUnavailable(f"Expo {endpoint}: could not connect: {type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:
            raise ExpoOutcomeUnknown(f"Expo {endpoint}: no answer: {type(exc).__name__}: {exc}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 429 or response.status_code >= 500:
            _, message = _errors_text(answer) if answer is not None else (None, response.text[:300])
            raise ExpoUnavailable(
                f"Expo {endpoint} answered {response.status_code}: {message}",
                response.status_code,
                _retry_after(response),
            )
        if response.status_code != 200 or (isinstance(answer, dict) and answer.get("errors")):
            code, message = _errors_text(answer) if answer is not None else (None, response.text[:300])
            status = response.status_code
            if status == 200:
                raise ExpoOutcomeUnknown(f"Expo {endpoint} answered 200 with errors: {message}")
            raise ExpoRejected(f"Expo {endpoint} refused the request ({status}): {message}", status, code)
        if not isinstance(answer, dict) or "data" not in answer:
            raise ExpoOutcomeUnknown(f"Expo {endpoint} answered 200 without data: {response.text[:300]}")
        return answer["data"]

    async def send(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST /send (at most 100 messages): one ticket per message, in order."""
        if len(messages) > 100:
            raise ValueError("Expo takes at most 100 messages per request")
        tickets = await self._post("send", list(messages))
        if not isinstance(tickets, list) or len(tickets) != len(messages):
            got = len(tickets) if isinstance(tickets, list) else type(tickets).__name__
            raise ExpoOutcomeUnknown(f"Expo send answered {got} tickets for {len(messages)} messages")
        malformed = {"status": "error", "message": "malformed ticket"}
        return [ticket if isinstance(ticket, dict) else malformed for ticket in tickets]

    async def get_receipts(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """POST /getReceipts (at most 1000 ids): receipt id -> receipt, for the receipts that exist."""
        if len(ids) > 1000:
            raise ValueError("Expo takes at most 1000 receipt ids per request")
        receipts = await self._post("getReceipts", {"ids": list(ids)})
        if not isinstance(receipts, dict):
            raise ExpoOutcomeUnknown(f"Expo getReceipts answered {type(receipts).__name__}, not an object")
        return {str(k): v for k, v in receipts.items() if isinstance(v, dict)}


@dataclass(frozen=True)
class Outcome:
    """A ticket or a receipt, read."""

    ok: bool
    id: str | None
    error_code: str | None
    message: str | None


def read_ticket(ticket: dict[str, Any]) -> Outcome:
    details = ticket.get("details")
    code = details.get("error") if isinstance(details, dict) else None
    if ticket.get("status") == "ok":
        ticket_id = ticket.get("id")
        return Outcome(True, str(ticket_id) if ticket_id else None, None, None)
    message = ticket.get("message")
    return Outcome(False, None, str(code) if code else "error", str(message)[:1000] if message else None)


class NotificationPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # one user, or many (both may be given)
    user_id: UUID | None = None
    user_ids: list[UUID] = Field(default_factory=list, max_length=10_000)
    title: str | None = Field(default=None, max_length=200)
    body: str | None = Field(default=None, max_length=2000)
    data: dict[str, Any] = Field(default_factory=dict)
    sound: Literal["default"] | None = "default"
    badge: int | None = Field(default=None, ge=0)
    channel_id: str | None = Field(default=None, max_length=200)
    priority: Literal["default", "normal", "high"] | None = None
    ttl: int | None = Field(default=None, ge=0, description="Seconds Expo/APNs/FCM keep trying to deliver.")

    @model_validator(mode="after")
    def _sendable(self) -> NotificationPayload:
        if self.user_id is None and not self.user_ids:
            raise ValueError("name the recipients: user_id or user_ids")
        if not self.title and not self.body:
            raise ValueError("a notification needs a title or a body")
        size = len(json.dumps({"title": self.title, "body": self.body, "data": self.data}).encode())
        if size > MAX_PAYLOAD_BYTES:
            raise ValueError(f"title, body and data are {size} bytes: over Expo's {MAX_PAYLOAD_BYTES}-byte limit")
        return self

    def recipients(self) -> list[UUID]:
        return sorted({*self.user_ids, *([self.user_id] if self.user_id else [])})

    def message_to(self, token: str) -> dict[str, Any]:
        message: dict[str, Any] = {"to": token}
        optional = {
            "title": self.title,
            "body": self.body,
            "data": self.data or None,
            "sound": self.sound,
            "badge": self.badge,
            "channelId": self.channel_id,
            "priority": self.priority,
            "ttl": self.ttl,
        }
        message.update({k: v for k, v in optional.items() if v is not None})
        return message


# a row's settlement: status, ticket id, error code, error message
Settlement = tuple[str, str | None, str | None, str | None]


def _settle_args(ids: list[UUID], outcomes: list[Settlement]) -> list[Any]:
    return [ids, [o[0] for o in outcomes], [o[1] for o in outcomes], [o[2] for o in outcomes], [o[3] for o in outcomes]]


@handler("send_notification", payload_model=NotificationPayload, timeout=300, startup_check=expo_startup_check)
async def send_notification(ctx: JobContext[NotificationPayload]) -> dict[str, Any]:
    settings = app_settings()
    settings.require_expo()
    payload, job_id = ctx.payload, ctx.job.id
    interrupted = await ctx.pool.execute(sql("mark_interrupted_unknown"), job_id)
    if interrupted != "UPDATE 0":
        ctx.log.warning("notifications of an interrupted attempt marked unknown, not resent", rows=interrupted)
    await ctx.pool.execute(
        sql("record_notifications"), job_id, payload.recipients(), payload.title, payload.body, json.dumps(payload.data)
    )
    deactivated = batches = 0
    rejected: list[str] = []
    async with ExpoPushClient.from_settings(settings) as expo:
        while rows := await ctx.pool.fetch(sql("claim_notification_batch"), job_id, settings.expo_send_batch_size):
            ids = [row["id"] for row in rows]
            tokens = [row["push_token"] for row in rows]
            batches += 1
            try:
                tickets = await expo.send([payload.message_to(token) for token in tokens])
            except ExpoUnavailable as exc:
                await ctx.pool.execute(sql("release_notifications"), ids)
                raise exc.job_outcome() from exc
            except ExpoRejected as exc:
                if exc.is_credentials:  # the access token: fix it and retry the job, nothing was sent
                    await ctx.pool.execute(sql("release_notifications"), ids)
                    raise PermanentError(f"{exc} (check EXPO_ACCESS_TOKEN)") from exc
                rejected.append(str(exc))
                outcome: Settlement = ("error", None, exc.code or f"HTTP_{exc.status}", str(exc)[:1000])
                await ctx.pool.execute(sql("settle_notifications"), *_settle_args(ids, [outcome] * len(ids)))
                continue
            except ExpoOutcomeUnknown as exc:
                ctx.log.warning("Expo's answer is unknown: the batch is not resent", error=str(exc), batch=len(ids))
                unknown: Settlement = ("unknown", None, None, str(exc)[:1000])
                await ctx.pool.execute(sql("settle_notifications"), *_settle_args(ids, [unknown] * len(ids)))
                continue
            read = [read_ticket(ticket) for ticket in tickets]
            outcomes: list[Settlement] = [("sent" if o.ok else "error", o.id, o.error_code, o.message) for o in read]
            gone = [token for token, o in zip(tokens, read, strict=True) if o.error_code == DEVICE_NOT_REGISTERED]
            async with ctx.transaction() as tx:
                await tx.execute(sql("settle_notifications"), *_settle_args(ids, outcomes))
                if gone:
                    status = await tx.execute(sql("deactivate_push_tokens"), gone, DEVICE_NOT_REGISTERED)
                    deactivated += int(status.split()[-1])
            await ctx.set_progress({"batches": batches})
    count_rows = await ctx.pool.fetch(sql("notification_counts"), job_id)
    counts = {row["status"]: row["n"] for row in count_rows}
    tickets_total = sum(row["tickets"] for row in count_rows)
    receipts_job: int | None = None
    if tickets_total:
        receipts_job = await ctx.enqueue(
            "check_push_receipts",
            {"job_id": job_id},
            delay=settings.expo_receipts_delay_seconds,
            dedupe_key=f"check_push_receipts:{job_id}",
        )
    if rejected and not counts.get("sent") and not counts.get("unknown"):
        raise PermanentError("; ".join(rejected)[:2000])
    ctx.log.info("notifications sent", batches=batches, deactivated=deactivated, **counts)
    return {
        "tokens": sum(counts.values()),
        "sent": counts.get("sent", 0),
        "errors": counts.get("error", 0),
        "unknown": counts.get("unknown", 0),
        "deactivated_tokens": deactivated,
        "batches": batches,
        "receipts_job_id": receipts_job,
    }


class ReceiptsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the send_notification job whose tickets to check
    job_id: int = Field(ge=1)
    round: int = Field(default=1, ge=1, le=MAX_RECEIPT_ROUNDS)


@handler("check_push_receipts", payload_model=ReceiptsPayload, timeout=300, startup_check=expo_startup_check)
async def check_push_receipts(ctx: JobContext[ReceiptsPayload]) -> dict[str, Any]:
    """Reads the receipts of a sending job's tickets; recording them is idempotent, so any
    failure simply retries the job (what was recorded stays)."""
    settings = app_settings()
    settings.require_expo()
    job_id = ctx.payload.job_id
    rows = await ctx.pool.fetch(sql("unchecked_receipts"), job_id)
    token_of = {row["ticket_id"]: row["push_token"] for row in rows}
    ids = list(token_of)
    checked = errors = not_ready = deactivated = 0
    size = settings.expo_receipts_batch_size
    async with ExpoPushClient.from_settings(settings) as expo:
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            try:
                receipts = await expo.get_receipts(chunk)
            except ExpoUnavailable as exc:
                raise exc.job_outcome() from exc
            except ExpoRejected as exc:
                raise PermanentError(str(exc)) from exc
            found = [(tid, read_ticket(receipts[tid])) for tid in chunk if tid in receipts]
            not_ready += len(chunk) - len(found)
            gone = [token_of[tid] for tid, o in found if o.error_code == DEVICE_NOT_REGISTERED]
            async with ctx.transaction() as tx:
                await tx.execute(
                    sql("record_receipts"),
                    job_id,
                    [tid for tid, _ in found],
                    ["ok" if o.ok else "error" for _, o in found],
                    [o.error_code for _, o in found],
                    [o.message for _, o in found],
                )
                if gone:
                    status = await tx.execute(sql("deactivate_push_tokens"), gone, DEVICE_NOT_REGISTERED)
                    deactivated += int(status.split()[-1])
            checked += len(found)
            errors += sum(1 for _, o in found if not o.ok)
    again: int | None = None
    if not_ready and ctx.payload.round < MAX_RECEIPT_ROUNDS:
        next_round = ctx.payload.round + 1
        again = await ctx.enqueue(
            "check_push_receipts",
            {"job_id": job_id, "round": next_round},
            delay=settings.expo_receipts_delay_seconds,
            dedupe_key=f"check_push_receipts:{job_id}:{next_round}",
        )
    ctx.log.info("push receipts read", checked=checked, errors=errors, not_ready=not_ready, deactivated=deactivated)
    return {
        "checked": checked,
        "errors": errors,
        "not_ready": not_ready,
        "deactivated_tokens": deactivated,
        "next_check_job_id": again,
    }
