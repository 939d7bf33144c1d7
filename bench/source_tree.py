"""Which jobrunner a bench runs: the tree the bench itself is in.

A bench file imported from one tree (an exported commit, another worktree) would otherwise run
whatever `jobrunner` the interpreter finds first, usually the editable install of a different
tree, and its daemons with it: the numbers would belong to other code. `child_pythonpath()` is
the PYTHONPATH for the bench's daemon processes (this tree's `src/`, its `handlers/` and its root,
for the bench's own handler modules); `run_from_tree()` restarts the bench itself on that path
when the `jobrunner` it imported came from elsewhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = (REPO_ROOT / "src", REPO_ROOT / "handlers", REPO_ROOT)
# set on the restarted bench: a second mismatch is an error, not another restart
_RESTARTED = "BENCH_SOURCE_TREE"


def child_pythonpath() -> str:
    return os.pathsep.join(str(path) for path in SOURCE_DIRS)


def imported_from_tree() -> bool:
    """Whether the `jobrunner` this process runs is this tree's `src/jobrunner`."""
    import jobrunner

    return Path(jobrunner.__file__).resolve().parent == REPO_ROOT / "src" / "jobrunner"


def run_from_tree(module: str) -> None:
    """Run `python -m module` with this process's arguments again on this tree's sources, unless
    this process already runs them (call it first thing in a bench's `main`)."""
    if imported_from_tree():
        return
    import jobrunner

    if os.environ.get(_RESTARTED):
        raise SystemExit(f"{module}: jobrunner still loads from {jobrunner.__file__}, not from {REPO_ROOT / 'src'}")
    print(f"{module}: jobrunner loads from {jobrunner.__file__}; restarting on {REPO_ROOT / 'src'}", file=sys.stderr)
    inherited = os.environ.get("PYTHONPATH")
    path = child_pythonpath() + (os.pathsep + inherited if inherited else "")
    env = {**os.environ, "PYTHONPATH": path, _RESTARTED: "1"}
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)
