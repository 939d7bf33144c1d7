"""The Expo push service on 127.0.0.1 speaking its HTTP API's wire format:
POST /--/api/v2/push/send (a JSON list of ≤ 100 messages, optionally gzip-compressed) answering
`{"data": [ticket, ...]}`, and POST /--/api/v2/push/getReceipts (`{"ids": [...]}`) answering
`{"data": {id: receipt}}`; refusals as `{"errors": [{"code", "message"}]}`. Tests drive it
through the real httpx client.

`unregistered` tokens get DeviceNotRegistered tickets; `unregistered_at_receipt` tokens get a
ticket but an error receipt; `fail_send` injects an answer for the n-th /send request (1-based);
`drop_send` reads the n-th request (its messages count as received) and closes the connection
without an answer, as a network failure after sending would."""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from handlers.tests.local_server import JsonRequestHandler, LocalServer

PREFIX = "/--/api/v2/push"


@dataclass
class Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    code: str = "INTERNAL_SERVER_ERROR"
    message: str = "An unknown error occurred."


class FakeExpo:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.access_token: str | None = None  # when set, requests must carry it
        self.unregistered: set[str] = set()
        self.unregistered_at_receipt: set[str] = set()
        self.fail_send: dict[int, Failure] = {}
        self.drop_send: set[int] = set()
        self.receipts_not_ready: set[str] = set()  # tokens whose receipts are not there yet
        self.send_requests: list[list[dict[str, Any]]] = []
        self.receipt_requests: list[list[str]] = []
        self.gzipped_requests = 0
        self.authorizations: list[str | None] = []  # each request's Authorization header
        self.received: dict[str, list[dict[str, Any]]] = {}  # token -> messages accepted
        self.receipts: dict[str, tuple[str, dict[str, Any]]] = {}  # ticket id -> (token, receipt)
        self.lock = threading.Lock()
        self._http = LocalServer(_make_handler(self), host)

    @property
    def push_url(self) -> str:
        return f"{self._http.origin}{PREFIX}"

    def start(self) -> FakeExpo:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def ticket_for(self, message: dict[str, Any]) -> dict[str, Any]:
        token = message["to"]
        if token in self.unregistered:
            return {
                "status": "error",
                "message": f'"{token}" is not a registered push notification recipient',
                "details": {"error": "DeviceNotRegistered", "expoPushToken": token},
            }
        self.received.setdefault(token, []).append(message)
        ticket_id = str(uuid.uuid4())
        if token in self.unregistered_at_receipt:
            receipt: dict[str, Any] = {
                "status": "error",
                "message": f'"{token}" is not a registered push notification recipient',
                "details": {"error": "DeviceNotRegistered"},
            }
        else:
            receipt = {"status": "ok"}
        self.receipts[ticket_id] = (token, receipt)
        return {"status": "ok", "id": ticket_id}


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def _make_handler(fake: FakeExpo) -> type[JsonRequestHandler]:
    class Handler(JsonRequestHandler):
        json_content_type = "application/json; charset=utf-8"

        def _body(self) -> Any:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.headers.get("content-encoding") == "gzip":
                with fake.lock:
                    fake.gzipped_requests += 1
                raw = gzip.decompress(raw)
            return json.loads(raw)

        def do_POST(self) -> None:
            body = self._body()
            with fake.lock:
                fake.authorizations.append(self.headers.get("authorization"))
            if fake.access_token and self.headers.get("authorization") != f"Bearer {fake.access_token}":
                self._json(401, _errors("UNAUTHORIZED", "The bearer token is invalid."))
                return
            if self.path == f"{PREFIX}/send":
                self._send(body)
            elif self.path == f"{PREFIX}/getReceipts":
                self._receipts(body)
            else:
                self._json(404, _errors("NOT_FOUND", "Not found"))

        def _send(self, body: Any) -> None:
            messages = body if isinstance(body, list) else [body]
            if len(messages) > 100:
                self._json(
                    400,
                    _errors("PUSH_TOO_MANY_NOTIFICATIONS", "You are trying to send more than 100 push notifications."),
                )
                return
            if any(not isinstance(m, dict) or "to" not in m for m in messages):
                self._json(400, _errors("VALIDATION_ERROR", '"to" is required.'))
                return
            with fake.lock:
                fake.send_requests.append(messages)
                number = len(fake.send_requests)
                failure = fake.fail_send.get(number)
                dropped = number in fake.drop_send
                if dropped:
                    # accepted and delivered, but the answer never reaches the client
                    for m in messages:
                        fake.ticket_for(m)
                tickets = [fake.ticket_for(m) for m in messages] if failure is None and not dropped else []
            if dropped:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if failure is not None:
                self._json(failure.status, _errors(failure.code, failure.message), failure.headers)
                return
            self._json(200, {"data": tickets})

        def _receipts(self, body: Any) -> None:
            ids = body.get("ids") if isinstance(body, dict) else None
            if not isinstance(ids, list):
                self._json(400, _errors("VALIDATION_ERROR", '"ids" must be an array.'))
                return
            if len(ids) > 1000:
                self._json(400, _errors("VALIDATION_ERROR", '"ids" must contain at most 1000 items.'))
                return
            with fake.lock:
                fake.receipt_requests.append(ids)
                data = {
                    i: fake.receipts[i][1]
                    for i in ids
                    if i in fake.receipts and fake.receipts[i][0] not in fake.receipts_not_ready
                }
            self._json(200, {"data": data})

    return Handler
