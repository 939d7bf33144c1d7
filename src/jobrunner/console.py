"""The `jobrunner` command (and `python -m jobrunner`): the CLI, imported with the garbage
collector off and then frozen.

Importing the CLI creates some 40,000 objects that live as long as the process (modules,
classes, pydantic models, compiled patterns) and next to no garbage: the collector ran over
them about a hundred times during the import, a tenth of the command's start-up, and freed a
few hundred objects. Frozen right after (gc.freeze), they are skipped by every later
collection too; what `jobrunner run` adds (handlers, settings) is frozen once loaded
(jobrunner.gc_freeze). The import's few cyclic leftovers stay frozen with the rest.
"""

from __future__ import annotations

import gc


def main() -> int:
    gc.disable()
    try:
        from jobrunner.cli import main as cli_main

        gc.freeze()
    finally:
        gc.enable()
    return cli_main()
