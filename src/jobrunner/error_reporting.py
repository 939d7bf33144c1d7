"""Reports jobs that die or fail unexpectedly to Sentry, when a DSN is configured.

What is reported: an attempt that raised an exception jobrunner did not expect (not
PermanentError, RetryLater or a timeout), and every job that ends `dead` (no attempts left).
Each event is tagged with job_type, job_id, attempt and queue and carries the payload with
secrets scrubbed. Every event is scrubbed twice before it leaves: by the SDK's own
`EventScrubber` (its denylist plus ours, recursive, no default PII), then by our `before_send`,
which walks the whole event (extra, contexts, breadcrumbs, exception values, at any depth),
drops the values of secret-named keys, and masks registered secret values and credentials in
URLs (userinfo, password, sig, token, X-Amz-Signature, key, ... query values) in every string.
Local variables of stack frames are never sent: a handler's locals can hold anything.

Sentry's client is process-global, so this module is too: `init_error_reporting` once at
daemon start; `report_job_error` is a no-op until then, or when no DSN is set.

The SDK is the optional extra `jobrunner[sentry]`, imported only once a DSN is set; a DSN set
without it is a configuration error (`Settings` refuses it), not a silent loss of reports.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jobrunner.redaction import redact_text

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

    from jobrunner.job import Job
    from jobrunner.settings import Settings

REDACTED = "[redacted]"
# a key naming any of these holds a credential, whatever the nesting (api_key, x-auth-token,
# DATABASE_URL's password, Set-Cookie, jwt, pwd, private_key, X-Amz-Signature, ...)
SECRET_KEY = re.compile(
    r"token|secret|passw|pwd|passphrase|key|auth|jwt|bearer|private|credential|cookie|session|dsn|signature"
    r"|(?<![a-z])(?:sig|otp)(?![a-z])",
    re.IGNORECASE,
)
# the SDK's own scrubber matches whole key names (case-insensitive): its list plus the names
# our payloads and upstreams use
_OUR_DENYLIST = [
    *("jwt", "pwd", "pass", "private", "sig", "signature", "x-amz-signature", "x_amz_signature", "access_token"),
    *("refresh_token", "id_token", "client_secret", "bearer", "dsn", "database_url", "service_role_key"),
]
SDK_MISSING = "SENTRY_DSN is set but the Sentry SDK is not installed: pip install 'jobrunner[sentry]'"
_MAX_DEPTH = 20

_enabled = False


def scrub(value: Any, depth: int = 0) -> Any:
    """A copy of `value` with the values of secret-looking keys replaced, recursively, and
    registered secrets and credentials in URLs masked in every string."""
    if depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and SECRET_KEY.search(key) else scrub(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item, depth + 1) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _scrub_event(event: Event, _hint: Hint) -> Event | None:
    scrubbed: Event = scrub(event)
    return scrubbed


class SentryUnavailable(RuntimeError):
    """A DSN is set, but the extra `jobrunner[sentry]` is not installed."""


def init_error_reporting(settings: Settings) -> bool:
    """Start reporting to Sentry if settings.sentry_dsn is set; returns whether it is on."""
    global _enabled
    if settings.sentry_dsn is None:
        return _enabled
    try:
        import sentry_sdk
        from sentry_sdk.integrations.logging import LoggingIntegration
        from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
    except ImportError:
        raise SentryUnavailable(SDK_MISSING) from None

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment,
        include_local_variables=False,
        # send_default_pii stays unset, i.e. off (setting it at all is deprecated since 2.x)
        event_scrubber=EventScrubber(
            denylist=[*DEFAULT_DENYLIST, *_OUR_DENYLIST], recursive=True, send_default_pii=False
        ),
        # only what this module reports: no events from log records, no performance tracing,
        # no integrations that would record queries (with parameters) behind our back
        integrations=[LoggingIntegration(level=None, event_level=None)],
        auto_enabling_integrations=False,
        traces_sample_rate=None,
        before_send=_scrub_event,
        before_breadcrumb=lambda crumb, _hint: scrub(crumb),
    )
    _enabled = True
    return True


def shutdown_error_reporting(timeout: float = 2.0) -> None:
    """Send what is queued and stop reporting (tests, embedding applications)."""
    global _enabled
    if _enabled:
        import sentry_sdk

        client = sentry_sdk.get_client()
        client.flush(timeout=timeout)
        client.close(timeout=timeout)
        sentry_sdk.get_global_scope().set_client(None)
    _enabled = False


def report_job_error(job: Job, exc: BaseException | None, *, dead: bool) -> None:
    """Report a failed attempt: `dead` when it was the job's last. Never raises."""
    if not _enabled:
        return
    with contextlib.suppress(Exception):  # reporting must never change what happens to the job
        _capture(job, exc, dead=dead)


def _capture(job: Job, exc: BaseException | None, *, dead: bool) -> None:
    try:
        payload: Any = scrub(json.loads(job.payload_json))
    except ValueError:
        payload = "(not valid JSON)"
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tag("job_type", job.job_type)
        scope.set_tag("job_id", str(job.id))
        scope.set_tag("attempt", str(job.attempt))
        scope.set_tag("queue", job.queue)
        scope.set_tag("outcome", "dead" if dead else "retried")
        scope.set_context(
            "job",
            {
                "id": job.id,
                "job_type": job.job_type,
                "queue": job.queue,
                "attempt": job.attempt,
                "max_attempts": job.max_attempts,
                "payload": payload,
            },
        )
        # one issue per job type and exception, not one per job
        scope.fingerprint = ["{{ default }}", job.job_type]
        scope.level = "error"
        if exc is not None:
            sentry_sdk.capture_exception(exc)
        else:
            sentry_sdk.capture_message(f"job {job.id} ({job.job_type}) is dead: no attempts left", level="error")
