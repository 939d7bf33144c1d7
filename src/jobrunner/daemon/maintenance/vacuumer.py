"""Keeps background_jobs from growing without bound where autovacuum does not run: VACUUMs it
when enough dead rows piled up, one replica at a time (the holder of a leader lease)."""

from __future__ import annotations

import time

import structlog
from prometheus_client import Counter

from jobrunner.daemon.clock import Clock
from jobrunner.daemon.maintenance.leadership import Leadership
from jobrunner.daemon.periodic import PeriodicService
from jobrunner.settings import VacuumMode
from jobrunner.store import JobStore

LEADERSHIP = "vacuum"


def vacuum_due(mode: VacuumMode, autovacuum_on: bool, dead_rows: int, live_rows: int, min_dead_rows: int) -> bool:
    """Whether background_jobs needs our VACUUM now: in `auto` mode only where autovacuum is
    off (every claim and every outcome leaves a dead row version, and nothing else reclaims
    them); past `min_dead_rows` dead rows and a tenth of the live ones."""
    if mode == "never" or (mode == "auto" and autovacuum_on):
        return False
    return dead_rows >= min_dead_rows and dead_rows >= live_rows // 10


class HotTableVacuumer(PeriodicService):
    def __init__(
        self,
        store: JobStore,
        worker_id: str,
        mode: VacuumMode,
        interval: float,
        min_dead_rows: int,
        log: structlog.typing.FilteringBoundLogger,
        errors: Counter | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        super().__init__("vacuumer", interval, log=log, errors=errors, clock=clock)
        self._store = store
        self._mode = mode
        self._min_dead_rows = min_dead_rows
        self._leadership = Leadership(store, LEADERSHIP, worker_id, log)
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._mode != "never"

    async def run_once(self) -> None:
        await self.vacuum_if_due()

    async def vacuum_if_due(self) -> bool:
        state = await self._store.hot_table_vacuum_state()
        dead, live = state["dead_rows"], state["live_rows"]
        if not vacuum_due(self._mode, state["autovacuum_on"], dead, live, self._min_dead_rows):
            return False
        if not state["may_vacuum"]:
            if not self._warned:
                self._warned = True
                self.log.warning(
                    "background_jobs needs VACUUM and this role may not run it (only its owner may): "
                    "turn autovacuum on, or run the daemon as the table's owner, or VACUUM it from cron",
                    dead_rows=dead,
                    autovacuum=state["autovacuum_on"],
                )
            return False
        # the lease outlives one VACUUM: another replica cannot start one meanwhile
        if not await self._leadership.acquire(3 * self.interval + 600):
            return False
        started = time.perf_counter()
        try:
            await self._store.vacuum_hot_table()
        finally:
            await self._leadership.release()
        self.log.info(
            "vacuumed background_jobs",
            dead_rows_before=dead,
            seconds=round(time.perf_counter() - started, 3),
            autovacuum=state["autovacuum_on"],
        )
        return True
