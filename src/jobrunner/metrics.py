"""Prometheus metrics of one daemon. Every metric is listed (with its meaning) in the README.

Each Daemon owns a CollectorRegistry, so several daemons in one process (tests, the demo) do
not collide. Label children are cached: a label lookup per job would cost more than the job.

Label values never come from job rows as such: whoever may INSERT a row chooses its job_type
and queue, and each distinct value would be a series of its own in every replica (and in
Prometheus). A job type is a label only when a handler is registered for it, a queue only when
this daemon works it or it is configured (MetricLabels); the rest share one bucket each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from jobrunner.job_metrics import JobMetrics
from jobrunner.samplers import SampledFamilies
from jobrunner.settings import Settings

# From 1 ms to 6 h: no-op jobs, interactive jobs (seconds) and batch jobs (hours) all fit.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
)  # fmt: skip

OUTCOMES = ("completed", "failed", "retried", "dead", "released", "cancelled", "snoozed")

# The buckets for everything else. A handler cannot be registered for `__unknown__` (Handler
# refuses it) and no configured queue may be named `__other__` (Settings refuses it).
UNKNOWN_JOB_TYPE = "__unknown__"
OTHER_QUEUE = "__other__"
OTHER_USAGE_KIND = "__other__"
# distinct (job_type, kind) pairs of jobrunner_upstream_usage_total; a handler that reports
# kinds made from its input must not grow the exposition without bound either
MAX_USAGE_SERIES = 200


class MetricLabels:
    """The label values jobs may put on metrics: registered job types and known queues."""

    __slots__ = ("job_types", "queues")

    def __init__(self, job_types: Iterable[str] = (), queues: Iterable[str] = ()) -> None:
        self.job_types = frozenset(job_types)
        self.queues = frozenset(queues)

    @classmethod
    def for_daemon(cls, settings: Settings, job_types: Iterable[str]) -> MetricLabels:
        """The registered handlers' types; the queues worked here, given limits, or listed in
        JOBRUNNER_METRICS_QUEUES (those other replicas work, for the queue-depth sample)."""
        return cls(job_types, [*settings.queues, *settings.queue_limits, *settings.metrics_queues])

    def job_type(self, value: str) -> str:
        return value if value in self.job_types else UNKNOWN_JOB_TYPE

    def queue(self, value: str) -> str:
        return value if value in self.queues else OTHER_QUEUE


class DaemonMetrics:
    def __init__(self, labels: MetricLabels | None = None) -> None:
        # without labels (tests of the names alone) every job type and queue is bucketed
        self.labels = labels or MetricLabels()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # the per-job series: updated on the hot path, so plain counts (see job_metrics.py)
        self.jobs = JobMetrics(LATENCY_BUCKETS)
        r.register(self.jobs)
        self.in_flight = Gauge("jobrunner_jobs_in_flight", "Handlers running now in this daemon.", registry=r)
        self.slots = Gauge("jobrunner_concurrency_slots", "Handlers this daemon may run at once.", registry=r)
        self.handlers_abandoned = Gauge(
            "jobrunner_handlers_abandoned",
            "Handlers that ignored their cancellation and still run after their jobs were settled"
            " (at JOBRUNNER_MAX_ABANDONED_HANDLERS the daemon stops claiming and reports unhealthy).",
            registry=r,
        )
        self.lost_leases = Counter(
            "jobrunner_lost_leases", "Attempts whose lease was lost before their outcome was written.", registry=r
        )
        self.rescued = Counter(
            "jobrunner_lease_rescues", "Jobs of dead workers this daemon put back (or marked dead).", registry=r
        )
        self.database_errors = Counter(
            "jobrunner_database_errors", "Failed database round trips, by daemon component.", ("component",), registry=r
        )
        self.listening = Gauge("jobrunner_listen_connected", "1 while the LISTEN connection is up.", registry=r)
        self.queue_jobs = Gauge(
            "jobrunner_queue_jobs",
            "Jobs in the table by queue and status (sampled by one replica at a time).",
            ("queue", "status"),
            registry=r,
        )
        self.oldest_runnable = Gauge(
            "jobrunner_queue_oldest_runnable_age_seconds",
            "Age of the oldest runnable job per queue (sampled by one replica at a time).",
            ("queue",),
            registry=r,
        )
        self.sampler_leader = Gauge(
            "jobrunner_queue_sampler_leader", "1 on the replica that samples queue depth now.", registry=r
        )
        self.plugin_sampler_leader = Gauge(
            "jobrunner_plugin_sampler_leader",
            "1 on the replica that runs this plugin sampler now (jobrunner.samplers).",
            ("sampler",),
            registry=r,
        )
        # what plugin samplers last sampled, exported as they are (jobrunner.samplers)
        self.sampled = SampledFamilies()
        r.register(self.sampled)
        self.upstream_usage = Counter(
            "jobrunner_upstream_usage",
            "Usage handlers report for their upstreams (e.g. OpenAI tokens), by kind.",
            ("job_type", "kind"),
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._usage_series: set[tuple[str, str]] = set()

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def job_claimed(self, job_type: str, queue: str, waited_seconds: float) -> None:
        # MetricLabels' lookups inlined: this runs for every job
        labels = self.labels
        key = (
            job_type if job_type in labels.job_types else UNKNOWN_JOB_TYPE,
            queue if queue in labels.queues else OTHER_QUEUE,
        )
        self.jobs.claimed.inc(key)
        self.jobs.start_delay.observe(key, max(0.0, waited_seconds))

    def job_finished(self, job_type: str, queue: str, outcome: str, duration: float | None) -> None:
        labels = self.labels
        key = (
            job_type if job_type in labels.job_types else UNKNOWN_JOB_TYPE,
            queue if queue in labels.queues else OTHER_QUEUE,
        )
        self.jobs.finished.inc((*key, outcome))
        if duration is not None:
            self.jobs.duration.observe(key, duration)

    def usage(self, job_type: str, kind: str, amount: float) -> None:
        series = (self.labels.job_type(job_type), kind)
        if series not in self._usage_series:
            if len(self._usage_series) >= MAX_USAGE_SERIES:
                series = (series[0], OTHER_USAGE_KIND)
            self._usage_series.add(series)
        self._child(self.upstream_usage, *series).inc(amount)

    def queue_depth(self, rows: Iterable[Any]) -> None:
        """Replace the queue-depth gauges with a sample: rows of queue, status, jobs and
        oldest_runnable_seconds, any number per queue and status. Queues not known are summed
        into `__other__` (their oldest runnable job: the oldest of them all)."""
        jobs: dict[tuple[str, str], float] = {}
        oldest: dict[str, float] = {}
        for row in rows:
            queue = self.labels.queue(row["queue"])
            key = (queue, row["status"])
            jobs[key] = jobs.get(key, 0) + row["jobs"]
            if row["status"] == "pending":
                oldest[queue] = max(oldest.get(queue, 0.0), row["oldest_runnable_seconds"])
        self.clear_queue_depth()
        for (queue, status), count in jobs.items():
            self.queue_jobs.labels(queue, status).set(count)
        for queue, seconds in oldest.items():
            self.oldest_runnable.labels(queue).set(seconds)

    def clear_queue_depth(self) -> None:
        self.queue_jobs.clear()
        self.oldest_runnable.clear()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
