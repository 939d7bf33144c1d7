"""PrefetchDepth: how many jobs `auto` claims ahead, from measured finish rate and claim time."""

from __future__ import annotations

from jobrunner.daemon.prefetch import ROUND_TRIPS_AHEAD, PrefetchDepth


def auto(concurrency: int = 10, batch_size: int = 100, ttl: float = 1.0) -> PrefetchDepth:
    return PrefetchDepth("auto", concurrency=concurrency, batch_size=batch_size, ttl=ttl)


def feed(depth: PrefetchDepth, *, claims: int, finished_per_claim: int, round_trip: float, gap: float) -> float:
    """Claims every `gap` seconds, each taking `round_trip`; returns the time of the last one."""
    now = 0.0
    for _ in range(claims):
        for _ in range(finished_per_claim):
            depth.finished()
        depth.claimed(now, now + round_trip)
        now += gap
    return now


def test_auto_starts_with_nothing_ahead() -> None:
    assert auto().depth(0.0) == 0


def test_auto_covers_the_jobs_finished_in_a_few_round_trips() -> None:
    depth = auto(batch_size=1_000)
    # 10 jobs every 1 ms (10,000 jobs/s), claims taking 0.5 ms: 5 jobs per round trip
    now = feed(depth, claims=60, finished_per_claim=10, round_trip=0.0005, gap=0.001)
    assert depth.depth(now) == round(ROUND_TRIPS_AHEAD * 5)


def test_auto_claims_nothing_ahead_of_slow_jobs() -> None:
    depth = auto()
    # one job a second finishing, claims of 1 ms: a thousandth of a job per round trip
    now = feed(depth, claims=30, finished_per_claim=1, round_trip=0.001, gap=1.0)
    assert depth.depth(now) == 0


def test_auto_is_capped_at_a_batch_or_the_concurrency() -> None:
    fast = dict(claims=60, finished_per_claim=1_000, round_trip=0.01, gap=0.01)
    batch_bound = auto(concurrency=10, batch_size=100)
    assert batch_bound.depth(feed(batch_bound, **fast)) == 100
    concurrency_bound = auto(concurrency=500, batch_size=100)
    assert concurrency_bound.depth(feed(concurrency_bound, **fast)) == 500


def test_a_hand_back_stops_claiming_ahead_for_the_ttl_and_measures_afresh() -> None:
    depth = auto(ttl=2.0)
    now = feed(depth, claims=60, finished_per_claim=10, round_trip=0.0005, gap=0.001)
    assert depth.depth(now) > 0
    depth.handed_back(now)
    assert depth.depth(now + 1.9) == 0
    # the old rate is gone: after the quiet time it starts from nothing, as at start-up
    assert depth.depth(now + 2.1) == 0


def test_a_fixed_prefetch_is_what_it_says_and_zero_is_off() -> None:
    fixed = PrefetchDepth(6, concurrency=2, batch_size=100, ttl=1.0)
    assert fixed.depth(0.0) == 6 and fixed.enabled
    off = PrefetchDepth(0, concurrency=2, batch_size=100, ttl=1.0)
    assert off.depth(0.0) == 0 and not off.enabled
    fixed.handed_back(10.0)
    assert fixed.depth(10.5) == 0 and fixed.depth(11.0) == 6


def test_after_a_quiet_spell_the_rate_since_then_counts() -> None:
    depth = auto()
    now = feed(depth, claims=60, finished_per_claim=10, round_trip=0.0005, gap=0.001)
    assert depth.depth(now) > 0
    # idle for a second (or slots busy with long jobs): nothing finished since the last claim
    assert depth.depth(now + 1.0) == 0
