"""A Supabase Storage client (its REST API, over httpx) that only ever talks to the configured host.

Downloads are the SSRF-sensitive part: a payload may name an object by URL, and the worker holds
the service-role key and sits inside the network. So the client never fetches a URL it was given;
it takes the bucket and path out of it after checking the host, and before every request checks
that the Storage host is https and resolves to public addresses only; after connecting it checks
the address it actually reached (a DNS answer may change in between). Redirects are not followed
off the host. Bodies are streamed with a byte cap and must have an allowed content type. Every
refusal is a PermanentError (a retry cannot change it); 429 and 5xx answers are retried.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from jobrunner import PermanentError, RetryLater
from jobrunner_handlers.buckets import IMAGE_CONTENT_TYPES
from jobrunner_handlers.settings import AppSettings

# httpx is imported where a request is made: the daemon imports this module with the plugin's
# handlers at start, and only a job that talks to Storage needs the client
if TYPE_CHECKING:
    import httpx

_MAX_REDIRECTS = 3
_URL_PREFIXES = ("/storage/v1/object/public/", "/storage/v1/object/authenticated/", "/storage/v1/object/sign/")


class StorageRefused(PermanentError):
    """A request the client will not make or an answer it will not accept."""


class StorageUnavailable(RuntimeError):
    """Storage answered 5xx or could not be reached: worth retrying."""


@dataclass(frozen=True)
class Downloaded:
    data: bytes
    content_type: str


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unsafe_reason(address: IpAddress, allow_private: bool) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # link-local holds the clouds' metadata services (169.254.169.254): refused even in tests
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast address"
    if not allow_private and (address.is_loopback or address.is_private or not address.is_global):
        return "a private or loopback address"
    return None


def check_object_path(path: str) -> str:
    """An object path inside a bucket: relative, no `..`, no control characters."""
    if not path or path.startswith("/") or "\\" in path or any(ord(ch) < 32 for ch in path):
        raise StorageRefused(f"invalid Storage object path {path!r}")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise StorageRefused(f"invalid Storage object path {path!r}: empty, '.' or '..' segment")
    return path


def _check_bucket(bucket: str) -> str:
    if not bucket or "/" in bucket or bucket in (".", ".."):
        raise StorageRefused(f"invalid Storage bucket name {bucket!r}")
    return bucket


def _error_message(response: httpx.Response) -> str:
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:500]
    return str(body)[:500]


def _retry_after(response: httpx.Response, default: float = 30.0) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


class StorageClient:
    """`async with StorageClient.from_settings(settings) as storage: await storage.download(...)`."""

    def __init__(
        self,
        base_url: str,
        service_key: str,
        *,
        allow_private_network: bool = False,
        max_download_bytes: int = 5 * 1024 * 1024,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise StorageRefused(f"the Storage URL {base_url!r} is not an http(s) URL")
        if parts.scheme == "http" and not allow_private_network:
            raise StorageRefused(f"the Storage URL {base_url!r} is not https (http is allowed only in tests)")
        import httpx

        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self._origin = (parts.scheme, parts.hostname.lower(), parts.port or (443 if parts.scheme == "https" else 80))
        self._allow_private = allow_private_network
        self.max_download_bytes = max_download_bytes
        self._http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {service_key}", "apikey": service_key},
            timeout=timeout,
            follow_redirects=False,
            transport=transport,
            trust_env=False,  # no proxy from the environment may see the service key
        )

    @classmethod
    def from_settings(cls, settings: AppSettings, transport: httpx.AsyncBaseTransport | None = None) -> StorageClient:
        settings.require_storage()
        assert settings.supabase_url is not None and settings.supabase_service_role_key is not None
        return cls(
            settings.supabase_url,
            settings.supabase_service_role_key.get_secret_value(),
            allow_private_network=settings.allow_private_network,
            max_download_bytes=settings.max_download_bytes,
            timeout=settings.storage_timeout,
            transport=transport,
        )

    async def __aenter__(self) -> StorageClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- where we may connect ------------------------------------------------------------------

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        if not parts.hostname:
            return False
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return (parts.scheme, parts.hostname.lower(), port) == self._origin

    async def _check_host_addresses(self) -> None:
        _, host, port = self._origin
        try:
            literal: IpAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses: list[IpAddress] = [literal]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise StorageUnavailable(f"cannot resolve the Storage host {host}: {exc}") from exc
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        for address in addresses:
            reason = _unsafe_reason(address, self._allow_private)
            if reason:
                raise StorageRefused(f"refusing to connect to the Storage host {host}: {address} is {reason}")

    def _check_peer(self, response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        if stream is None:  # an in-process transport: there is no socket
            return
        server = stream.get_extra_info("server_addr")
        if not server:
            return
        reason = _unsafe_reason(ipaddress.ip_address(str(server[0]).split("%")[0]), self._allow_private)
        if reason:
            raise StorageRefused(f"the Storage host resolved to {server[0]}, which is {reason}: refused")

    def object_url(self, bucket: str, path: str) -> str:
        return f"{self.base_url}/storage/v1/object/{quote(_check_bucket(bucket))}/{quote(check_object_path(path))}"

    def parse_object_url(self, url: str) -> tuple[str, str]:
        """(bucket, path) of a Storage object URL (public, authenticated or signed) on our host;
        any other host or shape is refused. The object is then fetched with the service key, never
        through the given URL."""
        parts = urlsplit(url)
        if not self._same_origin(url):
            raise StorageRefused(
                f"refusing to fetch {parts.scheme}://{parts.netloc}: only the configured Storage host "
                f"{self._origin[0]}://{self._origin[1]} is allowed"
            )
        base_path = urlsplit(self.base_url).path
        path = parts.path[len(base_path) :] if base_path and parts.path.startswith(base_path) else parts.path
        for prefix in (*_URL_PREFIXES, "/storage/v1/object/"):
            if path.startswith(prefix):
                bucket, _, key = unquote(path[len(prefix) :]).partition("/")
                return _check_bucket(bucket), check_object_path(key)
        raise StorageRefused(f"{url} is not a Storage object URL")

    async def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        if not response.is_stream_consumed:
            await response.aread()
        status = response.status_code
        message = _error_message(response)
        if status == 429:
            raise RetryLater(_retry_after(response), f"Storage rate limit on {what}: {message}")
        if status >= 500:
            raise StorageUnavailable(f"Storage answered {status} on {what}: {message}")
        if status in (400, 404) and "not found" in message.lower():
            raise StorageRefused(f"{what}: the object does not exist ({message})")
        if status in (401, 403):
            raise StorageRefused(f"Storage refused the service key on {what} ({status}): {message}")
        raise StorageRefused(f"Storage answered {status} on {what}: {message}")

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        import httpx

        await self._check_host_addresses()
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise StorageUnavailable(f"Storage request failed: {type(exc).__name__}: {exc}") from exc
        self._check_peer(response)
        return response

    # -- the API -----------------------------------------------------------------------------

    async def download(
        self,
        bucket: str,
        path: str,
        *,
        content_types: Sequence[str] | None = IMAGE_CONTENT_TYPES,
        max_bytes: int | None = None,
    ) -> Downloaded:
        """GET /storage/v1/object/{bucket}/{path}: at most max_bytes (default: max_download_bytes),
        of content_types (None: any type)."""
        import httpx

        url = self.object_url(bucket, path)
        what = f"download of {bucket}/{path}"
        for _ in range(_MAX_REDIRECTS + 1):
            await self._check_host_addresses()
            request = self._http.build_request("GET", url)
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise StorageUnavailable(f"{what} failed: {type(exc).__name__}: {exc}") from exc
            try:
                self._check_peer(response)
                if response.is_redirect:
                    target = urljoin(url, response.headers.get("location", ""))
                    if not self._same_origin(target):
                        raise StorageRefused(f"{what}: refusing the redirect to {urlsplit(target).netloc or target}")
                    url = target
                    continue
                await self._raise_for_status(response, what)
                content_type = self._content_type(response, what, content_types)
                data = await self._read_capped(response, what, max_bytes or self.max_download_bytes)
                return Downloaded(data, content_type)
            finally:
                await response.aclose()
        raise StorageRefused(f"{what}: more than {_MAX_REDIRECTS} redirects")

    def _content_type(self, response: httpx.Response, what: str, allowed: Sequence[str] | None) -> str:
        content_type = str(response.headers.get("content-type", "")).split(";")[0].strip().lower()
        if allowed is not None and content_type not in allowed:
            raise StorageRefused(
                f"{what}: content type {content_type or '(none)'!r} is not an accepted image type "
                f"({', '.join(allowed)})"
            )
        return content_type

    async def _read_capped(self, response: httpx.Response, what: str, cap: int) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise StorageRefused(f"{what}: {int(declared)} bytes is over the {cap}-byte limit")
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > cap:
                raise StorageRefused(f"{what}: the body is over the {cap}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def download_url(self, url: str, *, content_types: Sequence[str] | None = IMAGE_CONTENT_TYPES) -> Downloaded:
        bucket, path = self.parse_object_url(url)
        return await self.download(bucket, path, content_types=content_types)

    async def upload(
        self, bucket: str, path: str, data: bytes, content_type: str, *, upsert: bool = True, cache_control: int = 3600
    ) -> str:
        """POST /storage/v1/object/{bucket}/{path}; returns the object's key ("bucket/path")."""
        what = f"upload of {bucket}/{path}"
        response = await self._send(
            "POST",
            self.object_url(bucket, path),
            content=data,
            headers={
                "content-type": content_type,
                "x-upsert": "true" if upsert else "false",
                "cache-control": f"max-age={cache_control}",
            },
        )
        await self._raise_for_status(response, what)
        key = response.json().get("Key") if response.content else None
        return str(key or f"{bucket}/{path}")

    async def list_objects(
        self, bucket: str, prefix: str = "", *, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """POST /storage/v1/object/list/{bucket}: the objects (and folders, with id null) under prefix."""
        response = await self._send(
            "POST",
            f"{self.base_url}/storage/v1/object/list/{quote(_check_bucket(bucket))}",
            json={
                "prefix": prefix,
                "limit": limit,
                "offset": offset,
                "sortBy": {"column": "name", "order": "asc"},
            },
        )
        await self._raise_for_status(response, f"list of {bucket}/{prefix}")
        items = response.json()
        if not isinstance(items, list):
            raise StorageUnavailable(f"Storage list answered {type(items).__name__}, not a list")
        return items

    async def remove(self, bucket: str, paths: Sequence[str]) -> list[str]:
        """DELETE /storage/v1/object/{bucket} {"prefixes": paths}; returns the names deleted (paths
        already gone are not listed: deleting twice is harmless)."""
        if not paths:
            return []
        response = await self._send(
            "DELETE",
            f"{self.base_url}/storage/v1/object/{quote(_check_bucket(bucket))}",
            json={"prefixes": [check_object_path(p) for p in paths]},
        )
        await self._raise_for_status(response, f"delete of {len(paths)} objects in {bucket}")
        return [str(item.get("name")) for item in response.json() if isinstance(item, dict)]
