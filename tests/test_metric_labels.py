"""Label values of the daemon's metrics come from its configuration, never from job rows."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from jobrunner.handler import Handler
from jobrunner.metrics import MAX_USAGE_SERIES, DaemonMetrics, MetricLabels
from jobrunner.settings import Settings


def label_values(metrics: DaemonMetrics, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
        if label in sample.labels
    }


async def noop(_ctx: object) -> None:
    return None


def test_only_registered_job_types_and_known_queues_become_labels() -> None:
    settings = Settings(queues=["default", "mail"], queue_limits={"ai": {"max_running": 2}}, metrics_queues=["video"])
    metrics = DaemonMetrics(MetricLabels.for_daemon(settings, ["send_email"]))
    for job_type, queue in [("send_email", "mail"), ("junk_1", "default"), ("junk_2", "junk_queue"), ("x", "ai")]:
        metrics.job_claimed(job_type, queue, 0.1)
        metrics.job_finished(job_type, queue, "failed", 0.2)
    assert label_values(metrics, "job_type") == {"send_email", "__unknown__"}
    assert label_values(metrics, "queue") == {"mail", "default", "ai", "__other__"}


def test_queue_depth_of_unknown_queues_is_summed_into_one_series() -> None:
    metrics = DaemonMetrics(MetricLabels(["t"], ["default"]))
    rows = [
        {"queue": "default", "status": "pending", "jobs": 3, "oldest_runnable_seconds": 7.0},
        *(
            {"queue": f"junk_{i}", "status": "pending", "jobs": 2, "oldest_runnable_seconds": float(i)}
            for i in range(1000)
        ),
        {"queue": "junk_x", "status": "running", "jobs": 5, "oldest_runnable_seconds": 0.0},
    ]
    metrics.queue_depth(rows)
    get = metrics.registry.get_sample_value
    assert get("jobrunner_queue_jobs", {"queue": "__other__", "status": "pending"}) == 2000
    assert get("jobrunner_queue_jobs", {"queue": "__other__", "status": "running"}) == 5
    assert get("jobrunner_queue_oldest_runnable_age_seconds", {"queue": "__other__"}) == 999
    assert get("jobrunner_queue_oldest_runnable_age_seconds", {"queue": "default"}) == 7
    assert label_values(metrics, "queue") == {"default", "__other__"}
    metrics.queue_depth([])
    assert label_values(metrics, "queue") == set()


def test_usage_kinds_are_capped() -> None:
    metrics = DaemonMetrics(MetricLabels(["t"], []))
    for i in range(MAX_USAGE_SERIES + 50):
        metrics.usage("t", f"kind_{i}", 1)
    kinds = label_values(metrics, "kind")
    assert len(kinds) == MAX_USAGE_SERIES + 1 and "__other__" in kinds
    assert metrics.registry.get_sample_value("jobrunner_upstream_usage_total", {"job_type": "t", "kind": "__other__"})


def test_the_bucket_labels_cannot_name_a_handler_or_a_queue() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Handler("__unknown__", noop)
    for values in ({"queues": ["__other__"]}, {"metrics_queues": "__other__"}, {"queue_limits": {"__other__": {}}}):
        with pytest.raises(ValidationError, match="__other__"):
            Settings(**values)
