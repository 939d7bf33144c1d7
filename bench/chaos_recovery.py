"""The chaos run's account of each SIGKILL: how long the jobs a killed worker was running waited
to start again, where that time went, and which waits were stretched by a second failure.

For each execution a SIGKILL cut short (from the handlers' `executions` table), the run's own
tables give the steps of its recovery:

    kill ─► lease expiry ─► rescue (by a replica's rescuer) ─► claim(s) ─► next start

- the lease the job had when it was rescued, and the rescue's time: `chaos_transitions`, written
  by a trigger in the transaction that rescued it; who rescued it: the daemons' logs
  (`chaos_rescues`);
- every claim of the job after the rescue, by which worker, and how that holding ended (rescued
  again, handed back unstarted, or it started the job): `chaos_transitions`;
- whether a later holder was itself SIGKILLed or SIGSTOPped while it held the job
  (`chaos_daemons`, `chaos_pauses`).

The bound the issue sets (lease + 2 × rescue interval) is about one worker death: the lease runs
out, a rescuer sees it, the next claim takes the job first. A job whose next holder then dies, is
paused, or fails the attempt (its handler raised: a connection cut broke it) before the job
starts again suffers a second, independent failure and waits for that holder's lease, or as a
retry behind the backlog; its wait is reported on its own (a *chain*) and not held to the
one-death bound. The daemon's part of a chain is still checked: the first failure's recovery (the kill to
the next claim) must fit the bound like any other.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

KILLED_EXECUTIONS_SQL = """
WITH killed AS (
    SELECT e.job_id, e.attempt, e.job_type, e.worker, true AS started, d.killed_at,
           (SELECT min(n.started_at) FROM executions AS n
            WHERE n.job_id = e.job_id AND n.started_at > e.started_at) AS next_start
    FROM executions AS e JOIN chaos_daemons AS d ON d.worker = e.worker
    WHERE d.killed_at IS NOT NULL AND d.killed_at >= e.started_at
      AND (e.ended_at IS NULL OR e.ended_at > d.killed_at)
      -- not an attempt that had failed before the kill (its handler's record of its end broken
      -- by a connection cut): that job waited as a retry, not a rescue
      AND NOT EXISTS (SELECT 1 FROM chaos_attempt_ends AS x
                      WHERE x.job_id = e.job_id AND x.attempt = e.attempt AND x.worker = e.worker
                        AND x.logged_at <= d.killed_at)
    UNION ALL
    -- claimed by the killed worker and not started yet: waiting in its prefetch for a slot, or
    -- its handler had not recorded its start
    SELECT c.job_id, c.attempt, j.job_type, c.worker, false, d.killed_at,
           (SELECT min(n.started_at) FROM executions AS n
            WHERE n.job_id = c.job_id AND n.started_at > c.at) AS next_start
    FROM chaos_transitions AS c
    JOIN chaos_daemons AS d ON d.worker = c.worker
    JOIN background_jobs AS j ON j.id = c.job_id
    WHERE c.kind = 'claim' AND d.killed_at IS NOT NULL AND d.killed_at >= c.at
      AND NOT EXISTS (SELECT 1 FROM executions AS e
                      WHERE e.job_id = c.job_id AND e.attempt = c.attempt AND e.worker = c.worker)
      -- still held at the kill: not handed back, rescued or retried before it
      AND NOT EXISTS (SELECT 1 FROM chaos_transitions AS t
                      WHERE t.job_id = c.job_id AND t.attempt = c.attempt AND t.worker = c.worker
                        AND t.kind <> 'claim' AND t.at >= c.at AND t.at <= d.killed_at)
      AND NOT (j.worker_id = c.worker AND j.attempts = c.attempt AND j.finished_at <= d.killed_at)
)
SELECT k.*,
       (SELECT n.worker FROM executions AS n
        WHERE n.job_id = k.job_id AND n.started_at = k.next_start LIMIT 1) AS next_worker,
       r.kind AS left_as, r.at AS rescued_at, r.lease_expires_at,
       (SELECT rs.rescuer FROM chaos_rescues AS rs
        WHERE rs.job_id = k.job_id AND rs.attempt = k.attempt ORDER BY rs.logged_at LIMIT 1) AS rescuer
FROM killed AS k
LEFT JOIN LATERAL (
    SELECT t.kind, t.at, t.lease_expires_at FROM chaos_transitions AS t
    WHERE t.job_id = k.job_id AND t.attempt = k.attempt AND t.worker = k.worker AND t.kind <> 'claim'
    ORDER BY t.at LIMIT 1
) AS r ON true
ORDER BY k.killed_at, k.job_id
"""

# every claim of those jobs, and how the holding ended (NULL: it did not, the holder ran it)
CLAIMS_SQL = """
SELECT c.job_id, c.attempt, c.worker, c.at, x.kind AS ended_as, x.at AS ended_at
FROM chaos_transitions AS c
LEFT JOIN LATERAL (
    SELECT t.kind, t.at FROM chaos_transitions AS t
    WHERE t.job_id = c.job_id AND t.worker = c.worker AND t.attempt = c.attempt
      AND t.kind <> 'claim' AND t.at >= c.at
    ORDER BY t.at LIMIT 1
) AS x ON true
WHERE c.kind = 'claim' AND c.job_id = ANY($1::bigint[])
ORDER BY c.job_id, c.at
"""


@dataclass(frozen=True)
class Claim:
    worker: str
    at: datetime
    ended_as: str | None
    ended_at: datetime | None


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds()


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S.%f")[:-3]


def _stats(values: list[float]) -> dict[str, Any]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {
        "n": len(values),
        "p50": r(percentile(values, 0.5)),
        "p99": r(percentile(values, 0.99)),
        "max": r(max(values) if values else None),
    }


class Failures:
    """When each worker was killed or paused (a holder that fails while holding a job)."""

    def __init__(self, kills: dict[str, datetime], pauses: list[tuple[str, datetime, datetime]]) -> None:
        self.kills = kills
        self.pauses = pauses

    def during(self, worker: str, start: datetime, end: datetime | None) -> str | None:
        """How `worker` failed between start and end (end None: open), if it did."""
        killed = self.kills.get(worker)
        if killed is not None and killed >= start and (end is None or killed <= end):
            return f"killed at {_clock(killed)} while it held the job"
        for paused_worker, paused_at, resumed_at in self.pauses:
            if paused_worker == worker and (end is None or paused_at < end) and resumed_at > start:
                return f"paused {_clock(paused_at)} to {_clock(resumed_at)} while it held the job"
        return None


def account(
    row: asyncpg.Record | dict[str, Any],
    claims: list[Claim],
    failures: Failures,
    lease: float,
    rescue_interval: float,
) -> dict[str, Any]:
    """One killed execution's recovery, step by step, and whether a second failure stretched it."""
    killed_at: datetime = row["killed_at"]
    next_start: datetime | None = row["next_start"]
    rescued_at: datetime | None = row["rescued_at"]
    after = [
        c
        for c in claims
        if rescued_at is not None and c.at >= rescued_at and (next_start is None or c.at <= next_start)
    ]
    # the holdings between the rescue and the next start that did not start the job, and
    # whether their holder failed while it held it (the last claim is the one that ran it)
    holders: list[dict[str, Any]] = []
    second_failure: list[str] = []
    for i, claim in enumerate(after):
        ran_it = i == len(after) - 1 and next_start is not None and claim.worker == row["next_worker"]
        end = next_start if ran_it else claim.ended_at
        failed = failures.during(claim.worker, claim.at, end)
        if failed is None and not ran_it and claim.ended_as not in ("rescue", "release"):
            # its attempt failed (the handler raised, e.g. its connection was cut): the job
            # went back as a retry, behind the backlog, as any failed attempt does
            failed = f"failed its attempt ({claim.ended_as} at {_clock(claim.ended_at) if claim.ended_at else '?'})"
        holders.append(
            {
                "worker": claim.worker,
                "claimed_at": claim.at.isoformat(),
                "ended_as": "started it" if ran_it else claim.ended_as,
                "ended_at": None if ran_it or claim.ended_at is None else claim.ended_at.isoformat(),
                "holder_failed": failed,
            }
        )
        if failed is not None:
            second_failure.append(f"{claim.worker} {failed}")
    first_claim = after[0].at if after else None
    last_claim = after[-1].at if after else None
    steps = {
        "kill_to_lease_expiry": _seconds(row["lease_expires_at"], killed_at),
        "lease_expiry_to_rescue": _seconds(rescued_at, row["lease_expires_at"]),
        "rescue_to_first_claim": _seconds(first_claim, rescued_at),
        "last_claim_to_start": _seconds(next_start, last_claim),
    }
    wait = _seconds(next_start, killed_at)
    bound = lease + 2 * rescue_interval
    causes: list[str] = []
    if second_failure:
        causes.append("second failure: a later holder " + "; ".join(second_failure))
    if rescued_at is None:
        causes.append("no rescue of the killed attempt recorded")
    elif row["left_as"] != "rescue":
        causes.append(f"the killed attempt left `running` as a {row['left_as']}, not a rescue")
    k, r, c, s = (steps[name] for name in steps)
    if k is not None and k > lease + 0.05:
        causes.append(f"lease ran {k:.2f}s past the kill (> lease {lease}s): extended after the kill")
    if r is not None and r > rescue_interval + 0.1:
        causes.append(f"rescued {r:.2f}s after its lease expired (> rescue interval {rescue_interval}s)")
    handed_back = [h for h in holders if h["ended_as"] == "release"]
    if handed_back:
        causes.append(f"claimed ahead and handed back unstarted {len(handed_back)}×")
    if c is not None and c > rescue_interval:
        causes.append(f"first claimed {c:.2f}s after the rescue")
    if s is not None and s > rescue_interval:
        causes.append(f"started {s:.2f}s after its last claim (waited in the holder for a slot or a connection)")
    if wait is not None and wait > bound and not causes:
        causes.append("no step over its share: the steps add up")
    return {
        "job_id": row["job_id"],
        "attempt": row["attempt"],
        "job_type": row["job_type"],
        "killed_worker": row["worker"],
        # false: claimed, not started yet when its worker was killed
        "started": row["started"],
        "killed_at": killed_at.isoformat(),
        "lease_expires_at": None if row["lease_expires_at"] is None else row["lease_expires_at"].isoformat(),
        "rescued_at": None if rescued_at is None else rescued_at.isoformat(),
        "rescued_by": row["rescuer"],
        "claims_after_rescue": holders,
        "next_start": None if next_start is None else next_start.isoformat(),
        "next_start_worker": row["next_worker"],
        "wait_seconds": None if wait is None else round(wait, 3),
        "steps_seconds": {name: None if v is None else round(v, 3) for name, v in steps.items()},
        "recovery_seconds": None if first_claim is None else round(_seconds(first_claim, killed_at) or 0.0, 3),
        "chain": bool(second_failure),
        "over_bound": wait is not None and wait > bound,
        "causes": causes,
    }


async def after_worker_death(
    conn: asyncpg.Connection, lease: float, rescue_interval: float, limited_types: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The wait from each SIGKILL to the next start of the jobs it cut short, explained. Jobs of
    `limited_types` (global limits) also wait for their limit and its claim: reported apart."""
    rows = await conn.fetch(KILLED_EXECUTIONS_SQL)
    claim_rows = await conn.fetch(CLAIMS_SQL, sorted({r["job_id"] for r in rows}))
    claims: dict[int, list[Claim]] = defaultdict(list)
    for c in claim_rows:
        claims[c["job_id"]].append(Claim(c["worker"], c["at"], c["ended_as"], c["ended_at"]))
    kills = {
        r["worker"]: r["killed_at"]
        for r in await conn.fetch("SELECT worker, killed_at FROM chaos_daemons WHERE killed_at IS NOT NULL")
    }
    pauses = [(p["worker"], p["paused_at"], p["resumed_at"]) for p in await conn.fetch("SELECT * FROM chaos_pauses")]
    failures = Failures(kills, pauses)
    accounts = [account(r, claims[r["job_id"]], failures, lease, rescue_interval) for r in rows]
    for a in accounts:
        if a["job_type"] in limited_types:
            a["causes"].insert(0, "a globally limited type (claimed apart, within its limit)")
    bound = lease + 2 * rescue_interval
    waited = [a for a in accounts if a["wait_seconds"] is not None]
    one_death = [a for a in waited if not a["chain"] and a["job_type"] not in limited_types]
    single = [a["wait_seconds"] for a in one_death]
    unstarted = [a["wait_seconds"] for a in one_death if not a["started"]]
    limited = [a["wait_seconds"] for a in waited if not a["chain"] and a["job_type"] in limited_types]
    # the jobs of one kill share its lease expiry and rescue: the kills are the independent samples
    worst_of_kill: dict[str, float] = {}
    for a in one_death:
        worst_of_kill[a["killed_worker"]] = max(worst_of_kill.get(a["killed_worker"], 0.0), a["wait_seconds"])
    chains = [a for a in waited if a["chain"]]
    steps: dict[str, list[float]] = defaultdict(list)
    for a in one_death:
        for name, value in a["steps_seconds"].items():
            if value is not None:
                steps[name].append(value)
    recoveries = [
        a["recovery_seconds"]
        for a in waited
        if a["recovery_seconds"] is not None and a["job_type"] not in limited_types
    ]
    return {
        "bound_seconds": bound,
        "killed_executions": sum(1 for a in accounts if a["started"]),
        # jobs the killed worker had claimed and not started (counted in the waits below too)
        "killed_unstarted": sum(1 for a in accounts if not a["started"]),
        "run_again": len(waited),
        # the measure: one worker death, the job's next holder did not fail too
        "single_failure": _stats(single),
        "single_failure_unstarted": _stats(unstarted),
        # per kill, the longest one-death wait of its jobs
        "single_failure_per_kill": _stats(list(worst_of_kill.values())),
        # jobs of globally limited types, one worker death: their claim waits for the limit too
        "limited_types": sorted(limited_types),
        "limited": _stats(limited),
        # every killed execution, chains included
        "all": _stats([a["wait_seconds"] for a in waited]),
        "chains": len(chains),
        "chain_waits": _stats([a["wait_seconds"] for a in chains]),
        # the kill to the job's first claim after its rescue: the daemons' part, chains included
        # (limited types apart)
        "recovery": _stats(recoveries),
        # where the time of single-failure waits went
        "steps": {name: _stats(values) for name, values in steps.items()},
        "over_bound": [a for a in accounts if a["over_bound"]],
    }
