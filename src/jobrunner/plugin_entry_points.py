"""What installed plugins declare in an entry point group: one object of a kind, or a list of them
(the schedules of `jobrunner.schedules`, the samplers of `jobrunner.samplers`).

The entry points are read once per process: importlib.metadata reads every installed
distribution's metadata again on each call (2-15 ms with a hundred distributions installed),
a daemon's start asks for several groups (handlers, migrations twice, schedules, samplers), and
the set installed does not change while it runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

T = TypeVar("T")


@cache
def _by_group() -> dict[str, tuple[EntryPoint, ...]]:
    installed = entry_points()  # one reading of every distribution's metadata
    return {group: tuple(installed.select(group=group)) for group in installed.groups}


def entry_points_of(group: str) -> tuple[EntryPoint, ...]:
    """The entry points installed distributions declare in `group`."""
    return _by_group().get(group, ())


def objects_in(obj: object, kind: type[T], origin: str, error: type[Exception]) -> Iterator[T]:
    """`obj` itself when it is a `kind`, or the items of a list of them; `error` otherwise."""
    if isinstance(obj, kind):
        yield obj
    elif isinstance(obj, Iterable) and not isinstance(obj, (str, bytes, dict)):
        for item in obj:
            if not isinstance(item, kind):
                raise error(f"{origin} lists {item!r}, which is not a jobrunner {kind.__name__}")
            yield item
    else:
        raise error(f"{origin} is {obj!r}: expected a {kind.__name__} or a list of them")


def declared_objects(group: str, kind: type[T], error: type[Exception]) -> list[tuple[T, str]]:
    """Every `kind` the entry points of `group` declare, by entry point name, with where each
    comes from; a plugin that fails to load raises `error` naming it."""
    found: list[tuple[T, str]] = []
    for point in sorted(entry_points_of(group), key=lambda p: p.name):
        origin = f"entry point {point.name} ({point.value})"
        try:
            loaded = point.load()
        except Exception as exc:  # a broken plugin must say which one it is
            raise error(f"cannot load {origin}: {exc}") from exc
        found += [(item, origin) for item in objects_in(loaded, kind, origin, error)]
    return found
