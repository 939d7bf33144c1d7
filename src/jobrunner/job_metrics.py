"""The per-job metrics (claimed, finished, run time, start delay) as one custom collector.

prometheus_client's Counter and Histogram take a lock per increment and check on every
observation that they may be observed: the four per-job updates cost about a fifth of the
daemon's CPU per no-op job. These series change only on the daemon's event loop, so plain
counts are enough; they are turned into metric families only when scraped. The exposition is
the same as with Counter and Histogram.

/metrics renders in a worker thread while the loop goes on counting: collect() copies each
dict in one C-level call (atomic under the GIL) before it iterates, so a series added meanwhile
cannot break the iteration. A histogram's buckets, count and sum are copied apart from an
observation that lands meanwhile at worst, which the next scrape shows.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LabelValues = tuple[str, ...]


def _created_series() -> bool:
    """Whether prometheus_client's own metrics expose `_created` now: not once
    PROMETHEUS_DISABLE_CREATED_SERIES is set or disable_created_metrics() was called. The flag
    is private to prometheus_client; should it go, the series are exposed, as by default."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


class _Counter:
    __slots__ = ("created", "help", "labels", "name", "values")

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        self.name, self.help, self.labels = name, help, list(labels)
        self.values: dict[LabelValues, float] = {}
        self.created: dict[LabelValues, float] = {}

    def inc(self, key: LabelValues) -> None:
        values = self.values
        if key in values:
            values[key] += 1
        else:
            values[key] = 1
            self.created[key] = time.time()

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.help, labels=self.labels)
        created = _created_series()
        created_at = self.created.copy()
        for key, value in self.values.copy().items():
            family.add_metric(key, value, created=created_at.get(key) if created else None)
        return family


class _Histogram:
    __slots__ = ("bounds", "created", "help", "labels", "name", "series")

    def __init__(self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]) -> None:
        self.name, self.help, self.labels = name, help, list(labels)
        self.bounds = tuple(buckets)
        # per label set: the count of each bucket (not cumulative; the last is +Inf), then the sum
        self.series: dict[LabelValues, list[float]] = {}
        self.created: dict[LabelValues, float] = {}

    def observe(self, key: LabelValues, value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0] * (len(self.bounds) + 2)
            self.created[key] = time.time()
        # a value on a bound belongs to that bucket (le: less than or equal)
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        created = _created_series()
        created_at = self.created.copy()
        for key, live in self.series.copy().items():
            series = live.copy()
            buckets: list[tuple[str, float]] = []
            cumulative = 0.0
            for bound, count in zip((*self.bounds, float("inf")), series[:-1], strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
            family.add_metric(list(key), buckets, series[-1])
            if created and key in created_at:  # a series added during the copies has it next time
                family.add_sample(self.name + "_created", dict(zip(self.labels, key, strict=True)), created_at[key])
        return family


class JobMetrics(Collector):
    def __init__(self, buckets: Sequence[float]) -> None:
        labels = ("job_type", "queue")
        self.claimed = _Counter("jobrunner_jobs_claimed", "Jobs claimed (attempts started).", labels)
        self.finished = _Counter(
            "jobrunner_jobs_finished",
            "Attempts whose outcome was committed, by outcome: completed, failed (not retryable), retried, "
            "dead (attempts used up), released (handed back unfinished: at shutdown, or after waiting"
            " prefetch_ttl for a slot), cancelled, snoozed (to run again later, the attempt not spent).",
            (*labels, "outcome"),
        )
        self.duration = _Histogram("jobrunner_job_duration_seconds", "Handler run time of an attempt.", labels, buckets)
        self.start_delay = _Histogram(
            "jobrunner_job_start_delay_seconds",
            "From the moment a job became runnable (scheduled_at) until it was claimed.",
            labels,
            buckets,
        )

    def collect(self) -> Iterator[Metric]:
        yield self.claimed.family()
        yield self.finished.family()
        yield self.duration.family()
        yield self.start_delay.family()

    # no describe(): the daemon's registry (auto_describe) takes the names from collect()
