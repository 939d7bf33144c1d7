"""`jobrunner run` moves its start-up heap out of the collector's way (jobrunner.gc_freeze)."""

from __future__ import annotations

import gc

from jobrunner.gc_freeze import freeze_startup_heap


def test_the_start_up_heap_is_frozen_and_cyclic_garbage_collected_first() -> None:
    class Node:
        other: object

    garbage = Node()
    garbage.other = garbage  # a cycle only the collector can free
    collected_before = gc.get_stats()[2]["collected"]
    del garbage
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        # the cycle was collected before the freeze, not frozen with the rest
        assert gc.get_stats()[2]["collected"] > collected_before
    finally:
        gc.unfreeze()  # the test process's own heap is not ours to keep frozen
