"""job_type -> Handler, discovered from entry points and from named modules."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from types import ModuleType

from jobrunner.handler import Handler
from jobrunner.plugin_entry_points import entry_points_of

ENTRY_POINT_GROUP = "jobrunner.handlers"


class RegistryError(RuntimeError):
    pass


def _handlers_in(obj: object, origin: str) -> Iterator[Handler]:
    """A Handler, an iterable of Handlers, or a module whose top-level Handlers count."""
    if isinstance(obj, Handler):
        yield obj
    elif isinstance(obj, ModuleType):
        for value in vars(obj).values():
            if isinstance(value, Handler):
                yield value
    elif isinstance(obj, Iterable) and not isinstance(obj, (str, bytes)):
        for item in obj:
            if not isinstance(item, Handler):
                raise RegistryError(f"{origin} lists {item!r}, which is not a jobrunner Handler")
            yield item
    else:
        raise RegistryError(f"{origin} is {obj!r}: expected a Handler, a list of them, or a module")


class HandlerRegistry:
    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self._handlers: dict[str, Handler] = {}
        self._origins: dict[str, str] = {}
        for item in handlers:
            self.register(item)

    def register(self, item: Handler, origin: str = "code") -> None:
        existing = self._handlers.get(item.job_type)
        if existing is not None and existing is not item:
            raise RegistryError(
                f"two handlers for job type {item.job_type!r}: from {self._origins[item.job_type]} and from {origin}"
            )
        self._handlers[item.job_type] = item
        self._origins[item.job_type] = origin

    def get(self, job_type: str) -> Handler | None:
        return self._handlers.get(job_type)

    def job_types(self) -> list[str]:
        return sorted(self._handlers)

    def configuration_problems(self) -> dict[str, str]:
        """job_type -> what its handler says is missing from its configuration."""
        problems: dict[str, str] = {}
        for job_type, item in sorted(self._handlers.items()):
            if item.startup_check is None:
                continue
            try:
                problem = item.startup_check()
            except Exception as exc:
                problem = f"its configuration check failed: {type(exc).__name__}: {exc}"
            if problem:
                problems[job_type] = problem
        return problems

    def __len__(self) -> int:
        return len(self._handlers)

    def load_module(self, name: str) -> None:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise RegistryError(f"cannot import handler module {name!r}: {exc}") from exc
        found = list(_handlers_in(module, f"module {name}"))
        if not found:
            raise RegistryError(f"module {name!r} defines no jobrunner Handler")
        for item in found:
            self.register(item, f"module {name}")

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        for point in entry_points_of(group):
            origin = f"entry point {point.name} ({point.value})"
            try:
                loaded = point.load()
            except Exception as exc:  # a broken plugin must say which one it is
                raise RegistryError(f"cannot load {origin}: {exc}") from exc
            for item in _handlers_in(loaded, origin):
                self.register(item, origin)

    @classmethod
    def discover(
        cls, modules: Iterable[str] = (), *, entry_point_group: str | None = ENTRY_POINT_GROUP
    ) -> HandlerRegistry:
        registry = cls()
        if entry_point_group:
            registry.load_entry_points(entry_point_group)
        for name in modules:
            registry.load_module(name)
        return registry
