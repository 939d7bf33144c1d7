"""The flow chaos run (bench/chaos_flows.py), small: 1,000 parents in groups of 50 with their
callbacks and 'cancel' dependents, one fan-in callback of all 1,000, 3 daemon processes SIGKILLed
every 2 s while they drain it; then the same verdict from the database as the full run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos_flows import FlowChaosConfig, print_summary, run_flow_chaos


@pytest.mark.timeout(300)
async def test_every_callback_runs_after_all_its_parents_under_sigkills(db_url: str, tmp_path: Path) -> None:
    config = FlowChaosConfig(
        jobs=1_000,
        group_size=50,
        daemons=3,
        concurrency=16,
        lease_seconds=3.0,
        rescue_interval=0.5,
        kill_every=2.0,
        work_ms=(100, 300),
        drain_timeout=240.0,
        seed=11,
    )
    summary = await run_flow_chaos(config, db_url, tmp_path)
    print_summary(summary)
    assert summary["failures"] == [] and summary["passed"]
    # the damage was really done
    assert summary["kills"] >= 2
    # 20 group callbacks and the fan-in's, each ran
    assert summary["callbacks"] == 21
    assert summary["fan_in"]["parents"] == 1_000
    assert all(value == 0 for value in summary["must_be_zero"].values())
    # every job accounted for: parents, a callback and a guarded dependent per group, the fan-in, the final job
    assert summary["jobs"] == 1_000 + 2 * 20 + 2
    assert summary["outcomes"]["chaos_callback/completed"] == 21
