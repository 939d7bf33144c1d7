"""The chaos run (bench/chaos.py), small: 2,000 jobs, 3 daemon processes, a 12 s window of
SIGKILLs, one SIGSTOP past the lease and connection cuts (no server restart here: other tests
share the server), then the same verdict from the database as the full run.
"""

from __future__ import annotations

from pathlib import Path

from bench.chaos import LIMITED_MAX_RUNNING, ChaosConfig, print_summary, run_chaos


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
    assert chaos["kills"] >= 3
    assert len(chaos["pauses"]) == 1 and chaos["pauses"][0]["seconds"] > config.lease_seconds
    assert chaos["connection_cuts"] == 3 and sum(chaos["backends_terminated"]) >= 3
    assert summary["after_worker_death"]["killed_executions"] >= 1

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
