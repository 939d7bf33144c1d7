"""JobMetrics (plain counts, turned into families when scraped) exposes exactly what
prometheus_client's own Counter and Histogram would for the same observations."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client import metrics as prometheus_metrics

from jobrunner.job_metrics import JobMetrics
from jobrunner.metrics import LATENCY_BUCKETS

# on a bound, between bounds, below the first, above the last
VALUES = [0.0, 0.001, 0.0011, 0.25, 5.0, 21600.0, 1e6]


def without_created_times(exposition: bytes) -> list[str]:
    text = exposition.decode()
    return sorted(re.sub(r"^(\w+_created\{.*\}) \S+$", r"\1 T", line) for line in text.splitlines())


def reference_exposition() -> bytes:
    registry = CollectorRegistry()
    labels = ("job_type", "queue")
    jobs = JobMetrics(LATENCY_BUCKETS)
    claimed = Counter(jobs.claimed.name, jobs.claimed.help, labels, registry=registry)
    finished = Counter(jobs.finished.name, jobs.finished.help, (*labels, "outcome"), registry=registry)
    duration = Histogram(jobs.duration.name, jobs.duration.help, labels, buckets=LATENCY_BUCKETS, registry=registry)
    delay = Histogram(jobs.start_delay.name, jobs.start_delay.help, labels, buckets=LATENCY_BUCKETS, registry=registry)
    for i, value in enumerate(VALUES):
        job_type = "a" if i % 2 else "b"
        claimed.labels(job_type, "default").inc()
        delay.labels(job_type, "default").observe(value)
        finished.labels(job_type, "default", "completed").inc()
        duration.labels(job_type, "default").observe(value)
    finished.labels("a", "other", "released").inc()
    return generate_latest(registry)


def our_exposition() -> bytes:
    registry = CollectorRegistry()
    jobs = JobMetrics(LATENCY_BUCKETS)
    registry.register(jobs)
    for i, value in enumerate(VALUES):
        key = ("a" if i % 2 else "b", "default")
        jobs.claimed.inc(key)
        jobs.start_delay.observe(key, value)
        jobs.finished.inc((*key, "completed"))
        jobs.duration.observe(key, value)
    jobs.finished.inc(("a", "other", "released"))
    return generate_latest(registry)


@pytest.fixture
def created_series_off() -> Iterator[None]:
    # what PROMETHEUS_DISABLE_CREATED_SERIES=true does when prometheus_client is imported;
    # afterwards, back to what the process had
    was_on = prometheus_metrics._use_created
    disable_created_metrics()
    try:
        yield
    finally:
        if was_on:
            enable_created_metrics()


def test_the_exposition_matches_prometheus_clients_own_metrics() -> None:
    ours = without_created_times(our_exposition())
    assert ours == without_created_times(reference_exposition())
    # a value on a bound is in that bound's bucket: a saw 0.001, b saw 0.0 and 0.0011
    assert 'jobrunner_job_duration_seconds_bucket{job_type="a",le="0.001",queue="default"} 1.0' in ours
    assert 'jobrunner_job_duration_seconds_bucket{job_type="b",le="0.0025",queue="default"} 2.0' in ours
    assert 'jobrunner_jobs_claimed_total{job_type="a",queue="default"} 3.0' in ours
    if prometheus_metrics._use_created:  # unless PROMETHEUS_DISABLE_CREATED_SERIES is set
        assert any(line.startswith("jobrunner_jobs_claimed_created{") for line in ours)


def test_without_created_series_neither_exposes_them(created_series_off: None) -> None:
    ours = our_exposition().decode()
    assert "_created" not in ours
    assert sorted(ours.splitlines()) == sorted(reference_exposition().decode().splitlines())


def test_nothing_observed_exposes_the_families_without_series() -> None:
    registry = CollectorRegistry()
    registry.register(JobMetrics(LATENCY_BUCKETS))
    text = generate_latest(registry).decode()
    assert "# TYPE jobrunner_jobs_claimed_total counter" in text
    assert "# TYPE jobrunner_job_start_delay_seconds histogram" in text
    assert "_bucket" not in text
