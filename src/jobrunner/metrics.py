"""Prometheus metrics of one daemon. Every metric is listed (with its meaning) in the README.

Each Daemon owns a CollectorRegistry, so several daemons in one process (tests, the demo) do
not collide. Label children are cached: a label lookup per job would cost more than the job.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from jobrunner.job_metrics import JobMetrics

# From 1 ms to 6 h: no-op jobs, interactive jobs (seconds) and batch jobs (hours) all fit.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
)  # fmt: skip

OUTCOMES = ("completed", "failed", "retried", "dead", "released", "cancelled")


class DaemonMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # the per-job series: updated on the hot path, so plain counts (see job_metrics.py)
        self.jobs = JobMetrics(LATENCY_BUCKETS)
        r.register(self.jobs)
        self.in_flight = Gauge("jobrunner_jobs_in_flight", "Handlers running now in this daemon.", registry=r)
        self.slots = Gauge("jobrunner_concurrency_slots", "Handlers this daemon may run at once.", registry=r)
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
        self.upstream_usage = Counter(
            "jobrunner_upstream_usage",
            "Usage handlers report for their upstreams (e.g. OpenAI tokens), by kind.",
            ("job_type", "kind"),
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def job_claimed(self, job_type: str, queue: str, waited_seconds: float) -> None:
        key = (job_type, queue)
        self.jobs.claimed.inc(key)
        self.jobs.start_delay.observe(key, max(0.0, waited_seconds))

    def job_finished(self, job_type: str, queue: str, outcome: str, duration: float | None) -> None:
        self.jobs.finished.inc((job_type, queue, outcome))
        if duration is not None:
            self.jobs.duration.observe((job_type, queue), duration)

    def usage(self, job_type: str, kind: str, amount: float) -> None:
        self._child(self.upstream_usage, job_type, kind).inc(amount)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
