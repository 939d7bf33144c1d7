"""The one place jobrunner reads configuration from the environment (and `.env`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jobrunner.event_loop import EventLoopChoice
from jobrunner.limits import GlobalLimits, QueueLimits
from jobrunner.schedules import Schedule
from jobrunner.settings_errors import describe_validation_error
from jobrunner.settings_values import (
    DashboardUser,
    checked_dashboard_token,
    checked_event_loop,
    checked_schema_name,
    checked_sentry_dsn,
    checked_tracing,
    default_embedded_dir,
    split_commas,
)
from jobrunner.store import DEFAULT_CLAIM_MAX_BYTES

__all__ = ["DashboardUser", "Settings", "VacuumMode", "describe_settings_error"]

# auto: only where autovacuum is off for background_jobs
VacuumMode = Literal["auto", "always", "never"]


class Settings(BaseSettings):
    """Every knob of jobrunner. Environment variables are `JOBRUNNER_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="JOBRUNNER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        # Settings(schema_name=...) in code, as well as the aliases in the environment
        populate_by_name=True,
    )

    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("JOBRUNNER_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL URL. Unset: start the embedded server.",
    )
    listen_database_url: SecretStr | None = Field(
        default=None,
        description="Direct (non-pooled) URL used only for LISTEN when database_url is a pooler.",
    )
    pgbouncer: bool = Field(
        default=False,
        description="database_url goes through a transaction pooler (also set by ?pgbouncer=true).",
    )
    schema_name: str = Field(
        default="public", validation_alias=AliasChoices("JOBRUNNER_SCHEMA", "JOBRUNNER_SCHEMA_NAME")
    )
    queues: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["default"])
    concurrency: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=100, ge=1, le=10_000, description="Most jobs claimed per query.")
    # -- claims bounded in bytes (the payload limit itself is the database's: set_payload_limit)
    claim_max_bytes: int = Field(
        default=DEFAULT_CLAIM_MAX_BYTES,
        ge=1024,
        description=(
            "A claim stops adding jobs once their payloads (JSON text) sum past this many bytes;"
            " it always takes at least one. Keep it at least twice the database's payload limit"
            " (set_payload_limit), or a claim the budget cut short waits a poll interval."
        ),
    )
    prefetch: Annotated[int, Field(ge=0, le=10_000)] | Literal["auto"] = Field(
        default="auto",
        description=(
            "Jobs claimed ahead of free slots, waiting in the process for one: auto (as many as finish in"
            " about four claim round trips, measured), 0 (never) or a fixed number."
        ),
    )
    prefetch_ttl: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description=(
            "A job claimed ahead that waited this long for a slot is handed back for any replica"
            " (checked every half of it)."
        ),
    )
    poll_interval: float = Field(default=1.0, gt=0, le=3600)
    listen: bool = Field(default=True, description="Wake on LISTEN/NOTIFY; False polls only.")
    lease_seconds: float = Field(default=30.0, ge=1, le=86_400)
    heartbeat_interval: float | None = Field(default=None, gt=0, description="Default: a third of lease_seconds.")
    rescue_interval: float = Field(default=5.0, gt=0, le=3600)
    cancel_poll_interval: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="How often running jobs are checked for cancellation (NOTIFY is faster).",
    )
    shutdown_grace: float = Field(default=30.0, ge=0, le=86_400)
    burst_wait: float = Field(
        default=5.0,
        ge=0,
        description="--burst keeps going for jobs that become runnable within this many seconds (short retries).",
    )
    default_timeout: float | None = Field(
        default=600.0, gt=0, description="Handler timeout (s) when the handler sets none."
    )
    retention_seconds: float = Field(default=7 * 86_400, ge=0, description="How long finished jobs stay queryable.")
    prune_interval: float = Field(default=300.0, gt=0)
    vacuum: VacuumMode = Field(
        default="auto",
        description="VACUUM background_jobs ourselves: auto = only where autovacuum is off for it.",
    )
    vacuum_interval: float = Field(default=30.0, gt=0, description="Seconds between checks for dead rows.")
    vacuum_min_dead_rows: int = Field(default=10_000, ge=1, description="Dead rows before a VACUUM is worth it.")
    limits: dict[str, GlobalLimits] = Field(
        default_factory=dict,
        description='Global limits per job type as JSON, e.g. {"analyze_image": {"rate": 100, "per_seconds": 60}}; '
        "overrides the handler's own.",
    )
    queue_limits: dict[str, QueueLimits] = Field(
        default_factory=dict,
        description='Global limits per queue, over all its job types, as JSON, e.g. {"ai": {"max_running": 20}}.',
    )
    handler_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Extra modules to load handlers from."
    )
    pool_min_size: int = Field(default=1, ge=0, description="Connections of the daemon's own pool kept open.")
    pool_max_size: int | None = Field(
        default=None,
        ge=1,
        description="Most connections handlers use (ctx.pool), opened on demand. "
        "Default: min(10, 3 + concurrency/25). The daemon's own pool (3) and LISTEN (1) come on top.",
    )
    connect_timeout: float = Field(default=30.0, gt=0)
    pool_idle_timeout: float = Field(default=600.0, gt=0, description="Idle connections closed after (s).")
    worker_id: str | None = Field(default=None, description="Default: host:pid.")
    http_enabled: bool = Field(default=True, description="Serve /metrics, /healthz and /readyz.")
    http_host: str = Field(default="127.0.0.1", description="Bind address of the metrics/health endpoint.")
    http_port: int = Field(default=9108, ge=0, le=65535, description="0 picks a free port.")
    sample_interval: float = Field(
        default=15.0, gt=0, description="Seconds between queue-depth samples (by one replica at a time)."
    )
    # -- the operations endpoint: its bounds, the readiness probe, metric labels --------------
    http_max_connections: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="Connections the metrics/health endpoint has open at once; past it, one that sent no request"
        " for 0.5 s is dropped for a new one, else new ones wait to be accepted.",
    )
    http_requests_per_second: float = Field(
        default=50.0,
        gt=0,
        le=100_000,
        description="Most requests the metrics/health endpoint accepts a second (it shares the jobs' event loop);"
        " more wait to be accepted.",
    )
    readiness_interval: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds between the readiness probe's checks of the database (on a connection of its own);"
        " /readyz answers the latest.",
    )
    metrics_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Further queues (worked by other replicas) labelled by name in the queue-depth metrics;"
        " besides these, JOBRUNNER_QUEUES and the queues of JOBRUNNER_QUEUE_LIMITS. Others count as __other__.",
    )

    @field_validator("metrics_queues", mode="before")
    @classmethod
    def _split_metrics_queues(cls, value: object) -> object:
        return cls._split_commas(value)  # as JOBRUNNER_QUEUES: comma-separated or a JSON list

    @field_validator("queues", "queue_limits", "metrics_queues")
    @classmethod
    def _metrics_bucket_is_no_queue(cls, value: list[str] | dict[str, QueueLimits]) -> object:
        # the label that stands for every other queue in the metrics (jobrunner.metrics)
        if "__other__" in value:
            raise ValueError("__other__ is the metrics' label for unlisted queues and cannot name a queue")
        return value

    schedules: list[Schedule] = Field(
        default_factory=list, description="Cron schedules, a JSON list (JOBRUNNER_SCHEDULES); see jobrunner.schedules."
    )
    schedules_file: Path | None = Field(
        default=None, description="A TOML ([[schedules]] tables) or JSON file of more cron schedules."
    )
    schedule_interval: float = Field(default=1.0, gt=0, le=60, description="Seconds between checks for due ticks.")
    plugin_schedules: bool = Field(
        default=True, description="Declare the schedules installed handler plugins ship (jobrunner.schedules)."
    )
    plugin_samplers: bool = Field(
        default=True,
        description="Run the metric samplers installed plugins ship (jobrunner.samplers), one replica each at a time.",
    )
    schedule_misfire_grace: float = Field(
        default=60.0,
        ge=0,
        description="A tick first seen later than this (s) was missed; its schedule's `missed` policy applies.",
    )
    sentry_dsn: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("JOBRUNNER_SENTRY_DSN", "SENTRY_DSN"),
        description="Report jobs that die or fail unexpectedly to this Sentry DSN (jobrunner.error_reporting).",
    )

    @field_validator("sentry_dsn")
    @classmethod
    def _sentry_dsn_parses(cls, value: SecretStr | None) -> SecretStr | None:
        return checked_sentry_dsn(value)

    sentry_environment: str | None = Field(
        default=None,
        validation_alias=AliasChoices("JOBRUNNER_SENTRY_ENVIRONMENT", "SENTRY_ENVIRONMENT"),
        description="Sentry's environment tag (e.g. production); unset: Sentry's default.",
    )
    tracing: bool = Field(
        default=False,
        description=(
            "OpenTelemetry spans for every attempt, children of the enqueuer's span (needs jobrunner[otel];"
            " the application or opentelemetry-instrument configures the SDK and exporter)."
        ),
    )
    event_loop: EventLoopChoice = Field(
        default="auto", description="auto: uvloop when installed (about 10 % less CPU per job), else asyncio's."
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    embedded_data_dir: Path = Field(default_factory=default_embedded_dir)

    # -- notifications are hints; handlers that do not stop (daemon) -------------------------
    notify_min_interval: float = Field(
        default=0.05,
        ge=0,
        le=10,
        description=(
            "Least time (s) between two database checks that notifications alone set off: a claim after"
            " two claims in a row that a NOTIFY triggered and that found nothing, and a check of cancel"
            " hints. Bounds what a flood of NOTIFYs costs; 0 turns the spacing off."
        ),
    )
    cancel_grace: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description=(
            "How long a cancelled handler (timeout, cancel request, lost lease, end of the shutdown grace)"
            " may take to stop before the daemon stops waiting for it and settles its job without it."
        ),
    )
    max_snoozes: int = Field(
        default=100,
        ge=0,
        le=1_000_000,
        description=(
            "Most times one job may snooze (its handler raises Snooze) when its handler sets no max_snoozes;"
            " a snooze past it is a failed attempt."
        ),
    )
    blocking_threads: int = Field(
        default=4,
        ge=1,
        le=1024,
        description=(
            "Threads for blocking handler code (@blocking_handler(runs_in='thread'), ctx.run_in_thread):"
            " calls beyond it wait their turn. A call whose job stopped waiting holds its thread until it returns."
        ),
    )
    blocking_processes: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description=(
            "Worker processes for CPU-bound handler code (@blocking_handler(runs_in='process'),"
            " ctx.run_in_process), started with the first such call. Default: the number of CPUs."
        ),
    )
    max_abandoned_handlers: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description=(
            "Handlers the daemon stopped waiting for (they ignored their cancellation) that may still run"
            " in the background before it stops claiming and reports unhealthy on /healthz, so the"
            " orchestrator restarts it. Default: concurrency."
        ),
    )

    # -- the web dashboard (`jobrunner dashboard`, jobrunner.dashboard) -------------------------
    dashboard_host: str = Field(
        default="127.0.0.1",
        description="Bind address of `jobrunner dashboard`. Any address but loopback needs dashboard users or a"
        " token, or the dashboard refuses to start.",
    )
    dashboard_port: int = Field(default=9180, ge=0, le=65535, description="Port of `jobrunner dashboard`; 0 picks one.")
    dashboard_users: dict[str, DashboardUser] = Field(
        default_factory=dict,
        description='Dashboard logins (HTTP Basic) as JSON: {"name": {"password": "...", "role": "admin"}}; role'
        " read (the default) only looks, admin also acts on jobs and queues.",
    )
    dashboard_token: SecretStr | None = Field(
        default=None,
        description="A bearer token (Authorization: Bearer, or the password of Basic user `token`) with the"
        " admin role.",
    )
    dashboard_read_token: SecretStr | None = Field(
        default=None, description="A bearer token with the read role: sees everything, changes nothing."
    )
    dashboard_redact_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Payload, result and progress keys (any depth, case-insensitive) the dashboard shows as"
        " [redacted].",
    )
    dashboard_refresh_interval: float = Field(
        default=2.0, ge=0.2, le=3600, description="Least seconds between two live updates of an open dashboard page."
    )
    dashboard_bulk_batch: int = Field(
        default=500, ge=1, le=100_000, description="Jobs one transaction of a bulk dashboard action changes."
    )
    dashboard_pool_size: int = Field(
        default=4, ge=1, le=100, description="Most connections the dashboard opens (its own pool, LISTEN apart)."
    )

    @field_validator("dashboard_token", "dashboard_read_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        return checked_dashboard_token(value)

    @field_validator("dashboard_redact_keys", mode="before")
    @classmethod
    def _split_redact_keys(cls, value: object) -> object:
        return cls._split_commas(value)

    @field_validator("schema_name")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        return checked_schema_name(value)

    @field_validator("queues", "handler_modules", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        return split_commas(value)

    @field_validator("tracing")
    @classmethod
    def _opentelemetry_installed(cls, value: bool) -> bool:
        return checked_tracing(value)

    @field_validator("event_loop")
    @classmethod
    def _uvloop_installed(cls, value: str) -> str:
        return checked_event_loop(value)

    @field_validator("queues")
    @classmethod
    def _queues_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one queue is needed")
        return value

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> Settings:
        if self.heartbeat_interval is not None and self.heartbeat_interval >= self.lease_seconds / 2:
            raise ValueError(
                "heartbeat_interval must be under half of lease_seconds, so one missed beat does not lose the lease"
            )
        return self

    @property
    def effective_heartbeat_interval(self) -> float:
        return self.heartbeat_interval or self.lease_seconds / 3

    @property
    def effective_pool_max_size(self) -> int:
        if self.pool_max_size is not None:
            return self.pool_max_size
        return min(10, 3 + self.concurrency // 25)

    @property
    def effective_worker_id(self) -> str:
        if self.worker_id:
            return self.worker_id
        return f"{os.uname().nodename}:{os.getpid()}"


# secrets: a problem with one of these never shows the value given
_SECRET_FIELDS = frozenset(
    {"database_url", "listen_database_url", "sentry_dsn", "dashboard_users", "dashboard_token", "dashboard_read_token"}
)


def describe_settings_error(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable a user would set."""
    return describe_validation_error(exc, Settings, env_prefix="JOBRUNNER_", secret_fields=_SECRET_FIELDS)
