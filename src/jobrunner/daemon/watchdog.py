"""The systemd watchdog: a beat every WatchdogSec/2 while the daemon is healthy, none while it is
not, so systemd restarts a daemon whose fetch loop is wedged."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from jobrunner.daemon.periodic import PeriodicService
from jobrunner.systemd_notify import SystemdNotifier


class Watchdog(PeriodicService):
    def __init__(
        self, notifier: SystemdNotifier, is_healthy: Callable[[], bool], log: structlog.typing.FilteringBoundLogger
    ) -> None:
        self._interval_asked = notifier.watchdog_interval()  # None: systemd asks for no watchdog
        super().__init__("watchdog", self._interval_asked or 1.0, log=log)
        self._notifier = notifier
        self._is_healthy = is_healthy

    @property
    def enabled(self) -> bool:
        return self._interval_asked is not None

    async def run_once(self) -> None:
        if self._is_healthy():
            self._notifier.watchdog()
        else:
            self.log.error("fetch loop looks wedged: withholding the systemd watchdog beat")
