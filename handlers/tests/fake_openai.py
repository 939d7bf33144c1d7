"""An OpenAI API server on 127.0.0.1 speaking the chat completions wire format (the parts we use):
POST /v1/chat/completions with image input (a base64 data URL content part) and a strict JSON
schema `response_format`, answering a `chat.completion` object with `usage`, or the API's error
answers `{"error": {"message", "type", "param", "code"}}` with their status and headers (429 with
Retry-After, 5xx). Tests drive it through the real `openai` SDK.

By default every request gets a valid reply made from the request's own schema; `script` holds
answers for the next requests, in order; `always` answers every request."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from handlers.tests.local_server import JsonRequestHandler, LocalServer


@dataclass
class Answer:
    status: int = 200
    # a reply's message content (status 200), or an error body (other statuses)
    content: str | None = None
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str = "stop"
    refusal: str | None = None


def rate_limited(retry_after: float, *, code: str = "rate_limit_exceeded") -> Answer:
    return Answer(
        429,
        error={
            "message": "Rate limit reached for gpt-4o-mini in organization org-test on requests per min (RPM): "
            "Limit 100, Used 100, Requested 1.",
            "type": "requests",
            "param": None,
            "code": code,
        },
        headers={"retry-after": f"{retry_after:g}", "x-ratelimit-limit-requests": "100"},
    )


def server_error(status: int = 500) -> Answer:
    return Answer(
        status,
        error={
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    )


def api_error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None) -> Answer:
    return Answer(status, error={"message": message, "type": type_, "param": None, "code": code})


def reply(content: str, finish_reason: str = "stop") -> Answer:
    return Answer(200, content=content, finish_reason=finish_reason)


@dataclass
class SeenRequest:
    at: float  # time.monotonic()
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def image_bytes(self) -> bytes:
        for message in self.body["messages"]:
            if isinstance(message["content"], list):
                for part in message["content"]:
                    if part["type"] == "image_url":
                        return base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
        raise AssertionError("no image in the request")


USAGE = {"prompt_tokens": 1234, "completion_tokens": 156, "total_tokens": 1390}


def valid_reply_for(schema: dict[str, Any], score: float = 62.0) -> str:
    """A reply satisfying the request's schema: every enumerated area scored, lower ones first."""
    areas = schema["properties"]["areas"]["items"]["properties"]["area"]["enum"]
    reply: dict[str, Any] = {
        "overall_score": score,
        "areas": [
            {"area": area, "score": 40.0 + 10 * i, "advice": f"Some advice about {area}."}
            for i, area in enumerate(areas)
        ],
        "summary": "Looking good overall.",
    }
    if "style_keywords" in schema["properties"]:
        reply["style_keywords"] = ["minimal", "warm tones"]
    return json.dumps(reply)


class FakeOpenAI:
    def __init__(self, api_key: str = "sk-test-key", host: str = "127.0.0.1") -> None:
        self.api_key = api_key
        self.model = "gpt-4o-mini-2024-07-18"
        self.script: list[Answer] = []
        self.always: Answer | None = None
        self.requests: list[SeenRequest] = []
        self.lock = threading.Lock()
        self._http = LocalServer(_make_handler(self), host)

    @property
    def base_url(self) -> str:
        return f"{self._http.origin}/v1"

    def start(self) -> FakeOpenAI:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def next_answer(self, body: dict[str, Any]) -> Answer:
        with self.lock:
            if self.script:
                return self.script.pop(0)
            if self.always is not None:
                return self.always
        schema = body["response_format"]["json_schema"]["schema"]
        return reply(valid_reply_for(schema))


def _request_problem(body: dict[str, Any]) -> str | None:
    """What the real API would refuse in a request of ours (400 invalid_request_error)."""
    if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
        return "you must provide a model parameter and messages"
    images = [
        part
        for message in body["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]
    for part in images:
        url = part["image_url"]["url"]
        if not url.startswith("data:image/") or ";base64," not in url:
            return "Invalid image URL: expected a base64 data URL"
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") or {}
        if spec.get("strict") and (schema.get("additionalProperties") is not False or not spec.get("name")):
            return "Invalid schema for response_format: additionalProperties must be false in strict mode"
    return None


def _make_handler(fake: FakeOpenAI) -> type[JsonRequestHandler]:
    class Handler(JsonRequestHandler):
        def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            # OpenAI tags every answer with a request id
            super()._json(status, body, {"x-request-id": f"req_{uuid.uuid4().hex}", **(headers or {})})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/v1/chat/completions":
                self._json(404, {"error": {"message": "Not found", "type": "invalid_request_error", "code": None}})
                return
            if self.headers.get("authorization") != f"Bearer {fake.api_key}":
                self._json(
                    401,
                    {
                        "error": {
                            "message": "Incorrect API key provided.",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_api_key",
                        }
                    },
                )
                return
            with fake.lock:
                fake.requests.append(SeenRequest(time.monotonic(), dict(self.headers), body))
            problem = _request_problem(body)
            if problem:
                self._json(400, {"error": {"message": problem, "type": "invalid_request_error", "param": None}})
                return
            answer = fake.next_answer(body)
            if answer.status != 200:
                self._json(answer.status, {"error": answer.error}, answer.headers)
                return
            self._json(
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": fake.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": None if answer.refusal else answer.content,
                                "refusal": answer.refusal,
                                "annotations": [],
                            },
                            "logprobs": None,
                            "finish_reason": answer.finish_reason,
                        }
                    ],
                    "usage": {
                        **USAGE,
                        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
                    },
                    "service_tier": "default",
                    "system_fingerprint": "fp_test",
                },
                answer.headers,
            )

    return Handler
