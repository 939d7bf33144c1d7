"""A Supabase Storage server on 127.0.0.1 speaking the REST API's wire format (the parts we use):
GET/POST /storage/v1/object/{bucket}/{path}, POST /storage/v1/object/list/{bucket},
DELETE /storage/v1/object/{bucket} with {"prefixes": [...]}. Runs in a thread; tests drive it
through the real httpx client."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from handlers.tests.local_server import JsonRequestHandler, LocalServer

PREFIX = "/storage/v1/object/"


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    # False: sent chunked, with no Content-Length (the client must cap while streaming)
    declare_length: bool = True
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    # None: as created_at (an upsert that replaced the object sets it later)
    updated_at: str | None = None


class FakeStorage:
    def __init__(self, service_key: str = "test-service-key", host: str = "127.0.0.1") -> None:
        self.service_key = service_key
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.requests: list[tuple[str, str]] = []
        self.list_queries: list[tuple[str, dict[str, Any]]] = []  # (bucket, body) of each list request
        self.redirects: dict[str, str] = {}  # request path -> Location
        self.fail_with: dict[str, tuple[int, dict[str, str]]] = {}  # method -> (status, extra headers)
        self.lock = threading.Lock()
        self._http = LocalServer(_make_handler(self), host)

    @property
    def url(self) -> str:
        return self._http.origin

    @property
    def port(self) -> int:
        return int(self._http.origin.rsplit(":", 1)[1])

    def start(self) -> FakeStorage:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def put(self, bucket: str, path: str, data: bytes, content_type: str = "image/jpeg", **options: Any) -> None:
        with self.lock:
            self.objects[(bucket, path)] = StoredObject(data, content_type, **options)

    def get(self, bucket: str, path: str) -> StoredObject | None:
        with self.lock:
            return self.objects.get((bucket, path))

    def paths(self, bucket: str) -> list[str]:
        with self.lock:
            return sorted(p for b, p in self.objects if b == bucket)


def _make_handler(storage: FakeStorage) -> type[JsonRequestHandler]:
    class Handler(JsonRequestHandler):
        def _body(self) -> bytes:
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        def _authorized(self) -> bool:
            key = storage.service_key
            if self.headers.get("authorization") == f"Bearer {key}" and self.headers.get("apikey") == key:
                return True
            self._json(400, {"statusCode": "403", "error": "Unauthorized", "message": "invalid signature"})
            return False

        def _route(self) -> tuple[str, str] | None:
            path = urlsplit(self.path).path
            with storage.lock:
                storage.requests.append((self.command, path))
            if not self._authorized():
                return None
            failure = storage.fail_with.get(self.command)
            if failure is not None:
                self._body()
                self._json(
                    failure[0], {"statusCode": str(failure[0]), "error": "Error", "message": "injected"}, failure[1]
                )
                return None
            if not path.startswith(PREFIX):
                self._json(404, {"statusCode": "404", "error": "not_found", "message": "Route not found"})
                return None
            rest = path[len(PREFIX) :]
            bucket, _, key = rest.partition("/")
            return bucket, unquote(key)

        def do_GET(self) -> None:
            route = self._route()
            if route is None:
                return
            location = storage.redirects.get(urlsplit(self.path).path)
            if location is not None:
                self.send_response(302)
                self.send_header("location", location)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            bucket, key = route
            if bucket in ("public", "authenticated"):
                bucket, _, key = key.partition("/")
            obj = storage.get(bucket, key)
            if obj is None:
                self._json(400, {"statusCode": "404", "error": "not_found", "message": "Object not found"})
                return
            self.send_response(200)
            self.send_header("content-type", obj.content_type)
            if obj.declare_length:
                self.send_header("content-length", str(len(obj.data)))
                self.end_headers()
                self.wfile.write(obj.data)
                return
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for start in range(0, len(obj.data), 65536):
                chunk = obj.data[start : start + 65536]
                try:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client stopped reading at its cap
            self.wfile.write(b"0\r\n\r\n")

        def do_POST(self) -> None:
            route = self._route()
            if route is None:
                return
            bucket, key = route
            if bucket == "list":
                query = json.loads(self._body() or b"{}")
                with storage.lock:
                    storage.list_queries.append((key, query))
                # the API's request schema: prefix required, limit an integer of at least 1
                limit = query.get("limit", 100)
                if "prefix" not in query or not isinstance(limit, int) or limit < 1:
                    self._json(400, {"statusCode": "400", "error": "Bad Request", "message": "body/limit invalid"})
                    return
                self._json(200, self._list(key, query))
                return
            data = self._body()
            upsert = self.headers.get("x-upsert", "false") == "true"
            if storage.get(bucket, key) is not None and not upsert:
                self._json(400, {"statusCode": "409", "error": "Duplicate", "message": "The resource already exists"})
                return
            content_type = self.headers.get("content-type", "application/octet-stream")
            storage.put(bucket, key, data, content_type)
            self._json(200, {"Key": f"{bucket}/{key}", "Id": str(uuid.uuid4())})

        def _list(self, bucket: str, query: dict[str, Any]) -> list[dict[str, Any]]:
            prefix = str(query.get("prefix", "")).strip("/")
            entries: dict[str, dict[str, Any]] = {}
            with storage.lock:
                items = [(p, o) for (b, p), o in storage.objects.items() if b == bucket]
            for path, obj in items:
                if prefix and not path.startswith(prefix + "/"):
                    continue
                rest = path[len(prefix) + 1 :] if prefix else path
                name, slash, _ = rest.partition("/")
                if slash:
                    entries.setdefault(
                        name,
                        {
                            "name": name,
                            "id": None,
                            "updated_at": None,
                            "created_at": None,
                            "last_accessed_at": None,
                            "metadata": None,
                        },
                    )
                else:
                    entries[name] = {
                        "name": name,
                        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, path)),
                        "updated_at": obj.updated_at or obj.created_at,
                        "created_at": obj.created_at,
                        "last_accessed_at": obj.created_at,
                        "metadata": {"size": len(obj.data), "mimetype": obj.content_type},
                    }
            ordered = [entries[name] for name in sorted(entries)]
            # storage.search caps a page at 1500 entries
            offset, limit = int(query.get("offset", 0)), min(int(query.get("limit", 100)), 1500)
            return ordered[offset : offset + limit]

        def do_DELETE(self) -> None:
            route = self._route()
            if route is None:
                return
            bucket, _ = route
            prefixes = json.loads(self._body() or b"{}").get("prefixes", [])
            deleted = []
            with storage.lock:
                for path in prefixes:
                    if storage.objects.pop((bucket, path), None) is not None:
                        deleted.append({"name": path, "bucket_id": bucket, "id": str(uuid.uuid4())})
            self._json(200, deleted)

    return Handler
