"""The chaos run (bench/chaos.py), small: 2,000 jobs, 3 daemon processes, a 12 s window of
SIGKILLs, one SIGSTOP past the lease and connection cuts (no server restart here: other tests
share the server), then the same verdict from the database as the full run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import LIMITED_MAX_RUNNING, ChaosConfig, print_summary, run_chaos
from bench.chaos_recovery import Claim, Failures, account, percentile


async def test_chaos_loses_nothing_and_fences_the_paused_worker(db_url: str, tmp_path: Path) -> None:
    config = ChaosConfig(
        jobs=2_000,
        daemons=3,
        concurrency=16,
        lease_seconds=3.0,
        # the wait from a kill to the killed jobs' next start must stay within lease + 2 × this
        # (bench/chaos.py's check): 2 s of slack on a loaded machine
        rescue_interval=1.0,
        chaos_seconds=12.0,
        kill_every=3.0,
        connection_cuts=3,
        restart_postgres=False,
        drain_timeout=60.0,
        seed=7,
    )
    summary = await run_chaos(config, db_url, tmp_path)
    print_summary(summary)
    assert summary["failures"] == []
    assert summary["passed"]

    # the damage was really done
    chaos = summary["chaos"]
    # (a kill waits while fewer than two daemons work: replacements take seconds to start under load)
    assert chaos["kills"] >= 2
    assert len(chaos["pauses"]) == 1 and chaos["pauses"][0]["seconds"] > config.lease_seconds
    assert chaos["connection_cuts"] == 3 and sum(chaos["backends_terminated"]) >= 3
    after_death = summary["after_worker_death"]
    assert after_death["killed_executions"] + after_death["killed_unstarted"] >= 1 and after_death["run_again"] >= 1

    # every wait over the bound is explained: a second failure, or the step that took too long
    for outlier in after_death["over_bound"]:
        assert outlier["causes"], outlier

    # nothing lost, every job where its type must end
    assert summary["jobs"] == 2_000 and summary["unfinished"] == 0
    outcomes = summary["outcomes"]
    assert set(outcomes) == {
        "chaos_quick/completed",
        "chaos_flaky/completed",
        "chaos_long/completed",
        "chaos_limited/completed",
        "chaos_doomed/dead",
        "chaos_permanent/failed",
    }
    assert sum(outcomes.values()) == 2_000

    # outcomes: one per job, the recorded attempt's; extra executions only for lost leases
    assert summary["outcome_without_execution"] == 0
    assert summary["same_attempt_run_twice"] == 0
    assert summary["duplicate_executions"]["not_superseded"] == 0
    assert summary["running_without_lease"] == 0

    # the SIGSTOP rule: what the paused worker held and someone else re-ran, it did not overwrite
    (paused,) = summary["paused_workers"]
    assert paused["refused_outcomes"] + paused["cancelled_after_lease_lost"] >= paused["rerun_elsewhere"]

    assert summary["limited_max_overlap"] <= LIMITED_MAX_RUNNING
    assert summary["delayed_run_too_early"] == 0


# -- the account of each kill (bench/chaos_recovery.py), on made-up timelines ---------------------

T0 = datetime(2026, 12, 6, 9, 11, 37, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def killed_row(next_start: float, next_worker: str) -> dict[str, Any]:
    """Job 2176 running on chaos-1, SIGKILLed at T0; its lease ran out 4.9 s later, and chaos-4's
    rescuer put it back 0.5 s after that."""
    return {
        "job_id": 2176,
        "attempt": 1,
        "job_type": "chaos_long",
        "worker": "chaos-1",
        "started": True,
        "killed_at": T0,
        "next_start": at(next_start),
        "next_worker": next_worker,
        "left_as": "rescue",
        "rescued_at": at(5.4),
        "lease_expires_at": at(4.9),
        "rescuer": "chaos-4",
    }


def test_a_job_whose_next_holder_is_killed_too_is_a_chain_not_one_death() -> None:
    claims = [Claim("chaos-2", at(5.5), "rescue", at(11.0)), Claim("chaos-3", at(11.1), None, None)]
    failures = Failures({"chaos-1": T0, "chaos-2": at(6.0)}, [])
    account_ = account(killed_row(24.66, "chaos-3"), claims, failures, lease=5.0, rescue_interval=0.5)
    assert account_["chain"] and account_["over_bound"]
    assert account_["wait_seconds"] == 24.66
    assert account_["recovery_seconds"] == 5.5  # the first failure was recovered from in time
    assert [h["worker"] for h in account_["claims_after_rescue"]] == ["chaos-2", "chaos-3"]
    assert account_["claims_after_rescue"][0]["holder_failed"].startswith("killed at 09:11:43.000")
    assert account_["claims_after_rescue"][1]["ended_as"] == "started it"
    assert account_["causes"][0].startswith("second failure: a later holder chaos-2 killed")


def test_a_later_attempt_that_fails_is_a_second_failure() -> None:
    # the rescued job's next attempt failed (a connection cut broke its handler) and went back
    # as a retry, behind the backlog
    claims = [Claim("chaos-2", at(5.5), "retry", at(5.9)), Claim("chaos-3", at(24.0), None, None)]
    account_ = account(killed_row(24.1, "chaos-3"), claims, Failures({"chaos-1": T0}, []), 5.0, 0.5)
    assert account_["chain"]
    assert account_["causes"][0] == "second failure: a later holder chaos-2 failed its attempt (retry at 09:11:42.900)"


def test_a_holder_paused_while_it_holds_the_job_is_a_second_failure() -> None:
    claims = [Claim("chaos-2", at(5.5), "rescue", at(16.0)), Claim("chaos-3", at(16.1), None, None)]
    failures = Failures({"chaos-1": T0}, [("chaos-2", at(7.0), at(15.0))])
    account_ = account(killed_row(16.2, "chaos-3"), claims, failures, lease=5.0, rescue_interval=0.5)
    assert account_["chain"]
    assert "chaos-2 paused 09:11:44.000 to 09:11:52.000" in account_["causes"][0]


def test_a_late_claim_after_one_death_is_named_as_the_cause() -> None:
    claims = [Claim("chaos-3", at(9.0), None, None)]
    account_ = account(killed_row(9.05, "chaos-3"), claims, Failures({"chaos-1": T0}, []), 5.0, 0.5)
    assert not account_["chain"] and account_["over_bound"]
    assert account_["steps_seconds"] == {
        "kill_to_lease_expiry": 4.9,
        "lease_expiry_to_rescue": 0.5,
        "rescue_to_first_claim": 3.6,
        "last_claim_to_start": 0.05,
    }
    assert account_["causes"] == ["first claimed 3.60s after the rescue"]


def test_percentile_is_postgres_percentile_cont() -> None:
    assert percentile([float(n) for n in range(1, 101)], 0.99) == pytest.approx(99.01)
    assert percentile([2.0], 0.99) == 2.0 and percentile([], 0.5) is None
