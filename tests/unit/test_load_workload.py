"""Which batch size the load benchmark's batched models prefer."""

from __future__ import annotations

from benchmarks.load.workload import best_batch


def test_best_batch_takes_the_largest_of_a_tie() -> None:
    assert best_batch({1: 6448, 8: 6811, 16: 6805, 32: 6560}) == 16  # 8 and 16 tie
    assert best_batch({1: 97_000, 8: 398_000, 128: 603_000}) == 128
    assert best_batch({1: 5710, 8: 5918, 16: 5435}) == 8  # 16 is 8% slower: no tie
