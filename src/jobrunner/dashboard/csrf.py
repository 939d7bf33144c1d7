"""Cross-site request forgery protection for every action (every POST).

A browser that can reach the dashboard sends its credentials (Basic auth, or being on loopback)
with any request, including one a foreign page makes it send. So a change needs proof that it
comes from a page the dashboard served:

* a cookie with a random value (SameSite=Strict, HttpOnly), set with the first page, and
* a hidden form field with the HMAC of that value under a key only this process knows.

A foreign page can neither read the cookie nor compute the field, and cannot plant a cookie
that matches one (it lacks the key). Requests whose Origin names another site, or that the
browser marks cross-site (Sec-Fetch-Site), are refused before that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "jobrunner_csrf"
FIELD = "csrf"


class CsrfGuard:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    @staticmethod
    def new_cookie() -> str:
        return secrets.token_urlsafe(32)

    def token_for(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def refusal(
        self, cookie: str | None, submitted: str | None, origin: str | None, fetch_site: str | None, host: str | None
    ) -> str | None:
        """Why a POST is refused; None when it may go ahead."""
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return "the request came from another site"
        # an opaque origin ("null": a sandboxed frame, a redirect across sites) is another one too
        if origin is not None and (host is None or origin.split("://", 1)[-1].lower() != host.lower()):
            return "the request came from another origin"
        if not cookie or not submitted:
            return "the form has expired: reload the page and try again"
        if not hmac.compare_digest(self.token_for(cookie), submitted):
            return "the form has expired: reload the page and try again"
        return None
