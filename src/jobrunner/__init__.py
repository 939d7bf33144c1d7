"""jobrunner: a Postgres-native background-job daemon."""

from jobrunner.blocking import BlockingCallCancelled, BlockingContext, raise_if_cancelled
from jobrunner.client import AsyncClient, Client, InvalidJob, JobRecord
from jobrunner.context import JobContext
from jobrunner.errors import JobError, PermanentError, RetryLater, UpstreamRateLimited
from jobrunner.handler import Handler, blocking_handler, handler
from jobrunner.job import Job, JobStatus
from jobrunner.limits import GlobalLimits, QueueLimits
from jobrunner.migrate import MigrationSet
from jobrunner.named_queries import NamedQueries, load_queries
from jobrunner.new_job import NewJob
from jobrunner.redaction import register_secret
from jobrunner.retry import RetryPolicy
from jobrunner.schedules import Schedule
from jobrunner.settings import Settings

__all__ = [
    "AsyncClient",
    "BlockingCallCancelled",
    "BlockingContext",
    "Client",
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
    "PermanentError",
    "QueueLimits",
    "RetryLater",
    "RetryPolicy",
    "Schedule",
    "Settings",
    "UpstreamRateLimited",
    "blocking_handler",
    "handler",
    "load_queries",
    "raise_if_cancelled",
    "register_secret",
]
