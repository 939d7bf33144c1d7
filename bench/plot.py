"""The figure of a bench/compare.py report: throughput vs. concurrency, and pick-up latency.

    bench/.venv-peers/bin/python -m bench.plot bench/results/compare-….json bench/results/compare.png

It runs in the peers' virtualenv, where matplotlib is installed (bench/requirements-peers.txt),
so jobrunner's own environment never carries matplotlib and numpy; compare.py calls it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt


def plot(report: dict[str, Any], out: Path) -> None:
    systems: dict[str, Any] = report["systems"]
    raw: dict[str, Any] = report["raw"]
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})

    for name, summary in systems.items():
        # JSON object keys are strings: the concurrencies come back as "10", "100"
        points = sorted((int(c), rate) for c, rate in summary["drain_jobs_per_second"].items())
        throughput.plot(
            [c for c, _ in points], [r for _, r in points], marker="o", label=f"{name} {raw[name]['version']}"
        )
    replicas = report.get("replicas") or []
    if replicas:
        throughput.plot(
            [r["replicas"] * r["concurrency_each"] for r in replicas],
            [r["jobs_per_second"] for r in replicas],
            marker="s",
            linestyle="--",
            label="jobrunner, " + "/".join(str(r["replicas"]) for r in replicas) + " processes (total slots)",
        )
    throughput.set_xscale("log")
    ticks = sorted({int(c) for summary in systems.values() for c in summary["drain_jobs_per_second"]})
    ticks += sorted({r["replicas"] * r["concurrency_each"] for r in replicas} - set(ticks))
    throughput.set_xticks(ticks, [str(t) for t in ticks])
    throughput.minorticks_off()
    throughput.set_xlabel("concurrency (handler slots)")
    throughput.set_ylabel("jobs/s (drain of no-op jobs)")
    throughput.set_title(f"Drain throughput, {report['parameters']['jobs']:,} no-op jobs (one worker process)")
    throughput.grid(True, alpha=0.3)
    throughput.set_ylim(bottom=0)
    throughput.legend(fontsize="small")

    names = list(systems)
    percentiles = [("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms")]
    width = 0.8 / len(percentiles)
    for i, (label, key) in enumerate(percentiles):
        values = [raw[name]["pickup"].get(key, 0) for name in names]
        bars = latency.bar([x + i * width for x in range(len(names))], values, width, label=label)
        latency.bar_label(bars, fmt="%.1f", fontsize="x-small")
    latency.set_xticks([x + width for x in range(len(names))], names)
    latency.set_ylabel("ms from commit to handler start")
    latency.set_title("Idle pick-up latency")
    latency.legend(fontsize="small")
    latency.grid(True, axis="y", alpha=0.3)

    m = report["machine"]
    figure.suptitle(
        f"{m['cpus']} CPUs shared by PostgreSQL {m['postgres']} and the workers "
        f"(synchronous_commit={m['synchronous_commit']}), {report['created_at']}",
        fontsize="small",
    )
    figure.tight_layout()
    figure.savefig(out, dpi=120)


def main() -> int:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    plot(json.loads(source.read_text()), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
