"""The app plugin's settings: the one place its knobs are read from the environment (and `.env`).

The app's own variable names are honoured (`OPENAI_API_KEY`, `SUPABASE_URL`,
`SUPABASE_SERVICE_ROLE_KEY`, `EXPO_ACCESS_TOKEN`, and the `EXPO_PUBLIC_*` fallbacks); everything
else is `JOBRUNNER_APP_<NAME>`.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated

import structlog
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jobrunner import PermanentError
from jobrunner_handlers import buckets

MIB = 1024 * 1024


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JOBRUNNER_APP_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # -- OpenAI ---------------------------------------------------------------------------
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "JOBRUNNER_APP_OPENAI_API_KEY")
    )
    # The app's docs put the key here; an EXPO_PUBLIC_ variable is bundled into the mobile app,
    # so the key is public. Only a fallback, and the daemon warns at start-up.
    expo_public_openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("EXPO_PUBLIC_OPENAI_API_KEY")
    )
    openai_model: str = Field(default="gpt-4o-mini", min_length=1)
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("JOBRUNNER_APP_OPENAI_BASE_URL", "OPENAI_BASE_URL"),
        description="Default: the SDK's (api.openai.com). Tests and self-hosted gateways override it.",
    )
    openai_timeout: float = Field(default=60.0, gt=0)
    ai_cache_ttl_seconds: float = Field(default=3600.0, ge=0, description="How long an analysis is reused.")

    # -- Supabase Storage -----------------------------------------------------------------
    supabase_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SUPABASE_URL", "EXPO_PUBLIC_SUPABASE_URL", "JOBRUNNER_APP_SUPABASE_URL"),
    )
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SUPABASE_SERVICE_ROLE_KEY", "JOBRUNNER_APP_SUPABASE_SERVICE_ROLE_KEY"),
    )
    # the buckets functions/setup_app_storage.sql creates (jobrunner_handlers/buckets.py); another
    # name needs its bucket, policies and user_upload_buckets row made by hand
    uploads_bucket: str = Field(default=buckets.USER_UPLOADS, min_length=1)
    # None: thumbnails go next to their original, in the uploads bucket
    thumbnails_bucket: str | None = None
    archive_bucket: str = Field(default=buckets.ARCHIVE, min_length=1)
    max_download_bytes: int = Field(
        default=buckets.USER_UPLOADS_MAX_BYTES, ge=1, description="The uploads bucket's size limit."
    )
    storage_timeout: float = Field(default=30.0, gt=0)
    # Tests only: lets the Storage client use http:// and loopback/private addresses
    # (link-local addresses such as 169.254.169.254 stay refused regardless).
    allow_private_network: bool = False

    # -- Expo push ------------------------------------------------------------------------
    expo_push_url: str = Field(default="https://exp.host/--/api/v2/push", description="Base of /send, /getReceipts.")
    expo_access_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("EXPO_ACCESS_TOKEN", "JOBRUNNER_APP_EXPO_ACCESS_TOKEN")
    )

    # -- images ---------------------------------------------------------------------------
    thumbnail_sizes: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [256, 1024])
    # at most Pillow's own guard in thumbnails.py (40 Mpx)
    max_image_pixels: int = Field(
        default=24_000_000,
        ge=1,
        le=40_000_000,
        description="Larger images are refused from their header, before any pixel is decoded.",
    )
    # images decoded at once per process: each takes up to ~5-6 bytes x max_image_pixels at its
    # peak (~140 MB at the defaults); 1 keeps the daemon near 230 MB, well under the shipped
    # 512Mi, at any JOBRUNNER_CONCURRENCY (the other jobs wait holding only their download)
    image_concurrency: int = Field(default=1, ge=1, le=64, description="Images process_upload decodes at once.")

    # -- retention and cleanup ------------------------------------------------------------
    # cleanup_old_data: an object in a user's folder of the uploads (or thumbnails) bucket that no
    # row names is deleted once Storage says it was created and last replaced this long ago
    unused_upload_days: int = Field(default=90, ge=7)
    # entries per Storage list request (Storage's list returns at most 1500)
    cleanup_list_page_size: int = Field(default=1000, ge=1, le=1000)
    # list requests per cleanup_old_data run; the next run goes on where this one stopped
    cleanup_max_list_requests: int = Field(default=5000, ge=1)
    metrics_retention_days: int = Field(default=30, ge=1)
    # archive_old_analyses: analysis months that ended this long ago go to the archive bucket and
    # leave the database; "off" keeps them
    archive_retention_days: int | None = Field(default=365, ge=30)
    # objects per Storage delete request (Storage takes at most 1000); rows per metrics batch / 100
    cleanup_batch_size: int = Field(default=100, ge=1, le=1000)
    cleanup_max_batches: int = Field(default=50, ge=1)

    # -- month partitions (maintain_partitions) -------------------------------------------
    # partitions exist for this month and at least this many after it
    partition_months_ahead: int = Field(default=3, ge=3, le=36)
    # a month with more rows than this waiting in a default partition is not moved by the job
    # (the move holds the default partition's lock): the job fails, saying what to run by hand
    partition_move_max_rows: int = Field(default=100_000, ge=0)

    # -- recommendations ------------------------------------------------------------------
    recommendations_count: int = Field(default=10, ge=1, le=100)
    recommendations_exclude_days: int = Field(default=14, ge=0)
    weak_area_threshold: float = Field(default=70.0, gt=0, le=100)

    # -- analyze_image: OpenAI calls and their retries ------------------------------------
    openai_max_completion_tokens: int = Field(default=1000, ge=100, le=16_000)
    # tries of one request inside a job attempt (the SDK's own retries are off: these are ours)
    openai_request_tries: int = Field(default=3, ge=1, le=10)
    # a Retry-After up to this is waited inside the attempt; longer ones go back to the queue
    openai_max_inline_wait: float = Field(default=10.0, ge=0, le=120)
    # first backoff (doubling, jittered) after a 5xx or a 429 without Retry-After
    openai_retry_initial_wait: float = Field(default=0.5, gt=0, le=60)
    # how long the type pauses when 429s outlast the tries without a long Retry-After
    openai_rate_limit_pause: float = Field(default=30.0, gt=0, le=3600)

    # -- send_notification / check_push_receipts ------------------------------------------
    # the Expo push service takes at most 100 messages per /send request
    expo_send_batch_size: int = Field(default=100, ge=1, le=100)
    # ids per /getReceipts request; Expo's limit is 1000, its own Node SDK asks for 300
    expo_receipts_batch_size: int = Field(default=300, ge=1, le=1000)
    # receipts exist once Expo handed the message to APNs/FCM (up to ~30 min under load)
    expo_receipts_delay_seconds: float = Field(default=900.0, ge=0)
    expo_timeout: float = Field(default=30.0, gt=0)
    # request bodies larger than this are gzip-compressed (as Expo's Node SDK does)
    expo_gzip_min_bytes: int = Field(default=1024, ge=0)

    # -- the API's metrics on /metrics (jobrunner_handlers.api_monitoring) ------------------
    # the window the app sampler's gauges cover; the shipped alerts are written for 5 minutes
    api_metrics_window_seconds: int = Field(default=300, ge=60, le=3600)
    # a request slower than this counts in glow_api_slow_requests
    api_slow_request_ms: int = Field(default=2000, ge=1, le=3_600_000)

    @field_validator("thumbnail_sizes", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("thumbnail_sizes")
    @classmethod
    def _sizes_sensible(cls, value: list[int]) -> list[int]:
        if not value or any(size < 16 or size > 4096 for size in value):
            raise ValueError("thumbnail sizes must be 16 to 4096 pixels, at least one")
        return sorted(set(value))

    @field_validator("archive_retention_days", mode="before")
    @classmethod
    def _off_is_none(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    @field_validator("supabase_url", "openai_base_url", "expo_push_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    # -- what a handler needs ---------------------------------------------------------------

    @property
    def effective_openai_api_key(self) -> SecretStr | None:
        return self.openai_api_key or self.expo_public_openai_api_key

    @property
    def openai_key_is_public(self) -> bool:
        return self.openai_api_key is None and self.expo_public_openai_api_key is not None

    def storage_problem(self) -> str | None:
        """What is missing for Supabase Storage, or None."""
        if not self.supabase_url:
            return "SUPABASE_URL is not set (the Supabase project URL, for Storage)"
        if self.supabase_service_role_key is None:
            return "SUPABASE_SERVICE_ROLE_KEY is not set (Storage needs the service-role key)"
        return None

    def openai_problem(self) -> str | None:
        if self.effective_openai_api_key is None:
            return "OPENAI_API_KEY is not set"
        return None

    def expo_problem(self) -> str | None:
        """What is wrong with the Expo push settings, or None (the access token is optional)."""
        url = self.expo_push_url
        if not url.startswith("https://") and not (self.allow_private_network and url.startswith("http://")):
            return f"JOBRUNNER_APP_EXPO_PUSH_URL must be an https URL (got {url!r})"
        return None

    def require_expo(self) -> None:
        problem = self.expo_problem()
        if problem:
            raise PermanentError(f"Expo push is not configured: {problem}")

    def require_storage(self) -> None:
        problem = self.storage_problem()
        if problem:
            raise PermanentError(f"Supabase Storage is not configured: {problem}")

    def require_openai(self) -> None:
        problem = self.openai_problem()
        if problem:
            raise PermanentError(f"OpenAI is not configured: {problem}")


@cache
def app_settings() -> AppSettings:
    """The settings, read once per process (tests call `app_settings.cache_clear()`)."""
    settings = AppSettings()
    if settings.openai_key_is_public:
        structlog.get_logger("jobrunner_handlers").warning(
            "the OpenAI key comes from EXPO_PUBLIC_OPENAI_API_KEY: EXPO_PUBLIC_ variables are bundled "
            "into the mobile app, so this key is public. Rotate it and set OPENAI_API_KEY on the server only."
        )
    return settings


def storage_startup_check() -> str | None:
    return app_settings().storage_problem()


def openai_startup_check() -> str | None:
    settings = app_settings()
    return settings.openai_problem() or settings.storage_problem()


def expo_startup_check() -> str | None:
    return app_settings().expo_problem()
