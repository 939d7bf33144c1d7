"""jobrunner: a Postgres-native background-job daemon.

The public API, all of it. Each name is imported from its module on first use: importing
`jobrunner` (which every `jobrunner.x` import does first) loads nothing else, so that the
`jobrunner` command decides what its start-up loads and when (jobrunner.console), and a plugin
or an application loads only what it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported now, not on first use: the decorator shares its module's name, and importing the
# module `jobrunner.handler` (which the registry and every plugin do) sets the package attribute
# `handler` to that module, where the first `from jobrunner import handler` would then find it.
# Binding the function after the module's import keeps the name for the function.
from jobrunner.handler import Handler, blocking_handler, handler

if TYPE_CHECKING:
    from jobrunner.blocking import BlockingCallCancelled, BlockingContext, raise_if_cancelled
    from jobrunner.client import AsyncClient, Client, InvalidJob, JobRecord
    from jobrunner.context import JobContext
    from jobrunner.enqueue import EnqueueOptions
    from jobrunner.errors import JobError, PermanentError, RetryLater, Snooze, UpstreamRateLimited
    from jobrunner.flows import FlowGroup, ParentJob
    from jobrunner.job import Job, JobStatus
    from jobrunner.limits import GlobalLimits, QueueLimits
    from jobrunner.migrate import MigrationSet
    from jobrunner.named_queries import NamedQueries, load_queries
    from jobrunner.new_job import NewJob
    from jobrunner.redaction import register_secret
    from jobrunner.retry import RetryPolicy
    from jobrunner.samplers import Sampler
    from jobrunner.schedules import Schedule
    from jobrunner.settings import Settings

# each public name -> the module that defines it
_MODULE_OF = {
    "BlockingCallCancelled": "jobrunner.blocking",
    "BlockingContext": "jobrunner.blocking",
    "raise_if_cancelled": "jobrunner.blocking",
    "AsyncClient": "jobrunner.client",
    "Client": "jobrunner.client",
    "InvalidJob": "jobrunner.client",
    "JobRecord": "jobrunner.client",
    "JobContext": "jobrunner.context",
    "EnqueueOptions": "jobrunner.enqueue",
    "JobError": "jobrunner.errors",
    "PermanentError": "jobrunner.errors",
    "RetryLater": "jobrunner.errors",
    "Snooze": "jobrunner.errors",
    "UpstreamRateLimited": "jobrunner.errors",
    "FlowGroup": "jobrunner.flows",
    "ParentJob": "jobrunner.flows",
    "Job": "jobrunner.job",
    "JobStatus": "jobrunner.job",
    "GlobalLimits": "jobrunner.limits",
    "QueueLimits": "jobrunner.limits",
    "MigrationSet": "jobrunner.migrate",
    "NamedQueries": "jobrunner.named_queries",
    "load_queries": "jobrunner.named_queries",
    "NewJob": "jobrunner.new_job",
    "register_secret": "jobrunner.redaction",
    "RetryPolicy": "jobrunner.retry",
    "Sampler": "jobrunner.samplers",
    "Schedule": "jobrunner.schedules",
    "Settings": "jobrunner.settings",
}

__all__ = [
    "AsyncClient",
    "BlockingCallCancelled",
    "BlockingContext",
    "Client",
    "EnqueueOptions",
    "FlowGroup",
    "GlobalLimits",
    "Handler",
    "InvalidJob",
    "Job",
    "JobContext",
    "JobError",
    "JobRecord",
    "JobStatus",
    "MigrationSet",
    "NamedQueries",
    "NewJob",
    "ParentJob",
    "PermanentError",
    "QueueLimits",
    "RetryLater",
    "RetryPolicy",
    "Sampler",
    "Schedule",
    "Settings",
    "Snooze",
    "UpstreamRateLimited",
    "blocking_handler",
    "handler",
    "load_queries",
    "raise_if_cancelled",
    "register_secret",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'jobrunner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
