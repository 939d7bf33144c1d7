"""bench/claim_cost.py on tiny sizes: every measured claim took its whole batch (the bench
asserts it), with 0, 5 and 10 limited types declared, and the table comes out whole."""

from __future__ import annotations

import pytest

from bench.claim_cost import measure, print_table


async def test_claim_cost_measures_every_claim_beside_the_bare_one(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = await measure(db_url, waiting=50, claims=5, batches=[1, 10])
    assert [row["batch"] for row in rows] == [1, 10]
    for row in rows:
        assert set(row) == {"batch", "bare", "limited 0", "limited 5", "limited 10"}
        assert all(value > 0 for value in row.values())
    print_table(rows)
    table = capsys.readouterr().out
    assert "10 limited" in table and len(table.splitlines()) == 4
