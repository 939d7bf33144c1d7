"""Samplers: a plugin's own figures from the database on the daemon's /metrics.

A plugin declares a `Sampler` in its `jobrunner.samplers` entry point: a name and an async
function that reads the database through the pool it is given and returns Prometheus metric
families (`prometheus_client.core.GaugeMetricFamily` and the like). Like the queue-depth sampler,
it runs on one replica at a time, the holder of its leader lease (`sampler:<name>` in
`jobrunner_leaders`): ten replicas do not run ten queries, and the others export nothing for it
(aggregate with `max by (...)`). Every replica exports `jobrunner_plugin_sampler_leader{sampler}`.

What a sample may hold is bounded: at most `max_series` samples, no name of jobrunner's own
(`jobrunner_*`) and no name another sampler exports. A sample over a bound, like one that raises,
is dropped with a warning, and that sampler exports nothing until a sample succeeds again. Its
label values are the plugin's to bound: never one straight from a table that anyone may write.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

import asyncpg
from prometheus_client import Metric

from jobrunner.plugin_entry_points import declared_objects
from jobrunner.registry import RegistryError

SAMPLERS_ENTRY_POINT_GROUP = "jobrunner.samplers"
RESERVED_PREFIX = "jobrunner_"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")

SampleFunction = Callable[[asyncpg.Pool], Awaitable[Iterable[Metric]]]


class SamplerError(RegistryError):
    """A sampler that cannot be loaded, or a sample that breaks the rules above."""


@dataclass(frozen=True)
class Sampler:
    """`Sampler("app_api", sample_api)`: `sample(pool)` every `interval` seconds (None:
    JOBRUNNER_SAMPLE_INTERVAL) on the replica that holds the lease."""

    name: str
    sample: SampleFunction
    interval: float | None = None
    max_series: int = 1_000

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise SamplerError(f"sampler name {self.name!r}: 1-63 of a-z, 0-9 and _, starting with a letter")
        if self.interval is not None and not self.interval > 0:
            raise SamplerError(f"sampler {self.name}: the interval must be positive (got {self.interval})")
        if self.max_series < 1:
            raise SamplerError(f"sampler {self.name}: max_series must be at least 1 (got {self.max_series})")

    @property
    def lease(self) -> str:
        return f"sampler:{self.name}"


def entry_point_samplers(group: str = SAMPLERS_ENTRY_POINT_GROUP) -> list[Sampler]:
    """The samplers installed plugins declare, by entry point name; a name declared twice is an error."""
    found: dict[str, tuple[Sampler, str]] = {}
    for item, origin in declared_objects(group, Sampler, SamplerError):
        if item.name in found and found[item.name][0] is not item:
            raise SamplerError(f"two samplers named {item.name!r}: from {found[item.name][1]} and from {origin}")
        found[item.name] = (item, origin)
    return [item for item, _ in found.values()]


class SampledFamilies:
    """The metric families each sampler last sampled, on /metrics as they are. Registered in the
    daemon's CollectorRegistry; read by the exposition thread, replaced by the event loop."""

    def __init__(self) -> None:
        self._by_sampler: dict[str, tuple[Metric, ...]] = {}

    def replace(self, sampler: Sampler, families: Iterable[Metric]) -> None:
        """Export `families` for `sampler` in place of its last sample, once they keep the rules."""
        checked = tuple(families)
        names: set[str] = set()
        series = 0
        for family in checked:
            if not isinstance(family, Metric):
                raise SamplerError(f"sampler {sampler.name} returned {family!r}, not a prometheus_client Metric")
            if family.name.startswith(RESERVED_PREFIX):
                raise SamplerError(f"sampler {sampler.name}: the metric name {family.name!r} is jobrunner's own")
            if family.name in names:
                raise SamplerError(f"sampler {sampler.name} returned the metric {family.name!r} twice")
            names.add(family.name)
            series += len(family.samples)
        if series > sampler.max_series:
            raise SamplerError(
                f"sampler {sampler.name} returned {series} series, over its max_series {sampler.max_series}"
            )
        for other, families in self._by_sampler.items():
            if other != sampler.name and (taken := names & {f.name for f in families}):
                raise SamplerError(f"sampler {sampler.name}: {', '.join(sorted(taken))} exported by sampler {other}")
        self._by_sampler[sampler.name] = checked

    def clear(self, sampler: Sampler) -> None:
        self._by_sampler.pop(sampler.name, None)

    def describe(self) -> list[Metric]:
        # the names come and go with the samples: nothing to check once at registration
        return []

    def collect(self) -> Iterator[Metric]:
        for families in tuple(self._by_sampler.values()):
            yield from families
