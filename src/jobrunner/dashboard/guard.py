"""An ASGI middleware in front of every dashboard route: who is asking (jobrunner.dashboard.access),
and the security headers of every response.

The headers: a Content-Security-Policy that runs only the dashboard's own script files (no
inline script, no eval: htmx is configured without it) and loads nothing from elsewhere; no
framing; no MIME sniffing; the referrer only to the dashboard itself; and no caching of pages, which show payloads.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobrunner.dashboard.access import AccessPolicy, Viewer

VIEWER_KEY = "jobrunner.dashboard.viewer"

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
        b" form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: under no-referrer browsers send `Origin: null` with a form,
    # and the CSRF check could not tell the dashboard's own forms from a foreign page's
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]
NO_STORE = (b"cache-control", b"no-store")


def viewer_of(scope: Scope) -> Viewer:
    viewer: Viewer = scope[VIEWER_KEY]
    return viewer


class Guard:
    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        client = scope.get("client")
        viewer = self.policy.viewer(headers.get("authorization"), client[0] if client else None, headers.get("host"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [header for header in SECURITY_HEADERS if header[0] not in present]
                if b"cache-control" not in present:
                    extra.append(NO_STORE)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        if viewer is None:
            if self.policy.configured:
                response = PlainTextResponse(
                    "log in to see the jobrunner dashboard",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="jobrunner", charset="UTF-8"'},
                )
            else:
                response = PlainTextResponse(
                    "this dashboard has no users or token configured, so only this machine may use it,"
                    " at a loopback address (http://127.0.0.1:PORT/)",
                    status_code=403,
                )
            await response(scope, receive, send_with_headers)
            return
        scope[VIEWER_KEY] = viewer
        await self.app(scope, receive, send_with_headers)
