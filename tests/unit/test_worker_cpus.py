"""How `--workers N` shares the supervisor's cores among the workers."""

from __future__ import annotations

import pytest

from mlserve.supervisor import worker_cpus


@pytest.mark.parametrize(
    ("count", "cpus", "expected"),
    [
        (2, [0, 1], [{0}, {1}]),  # one core each
        (2, [0, 1, 2, 3], [{0, 1}, {2, 3}]),  # an equal share each
        (3, [0, 1, 2, 3], [{0}, {1}, {2, 3}]),
        (3, [4, 6], [{4}, {6}, {4}]),  # more workers than cores: the cores in turn
        (1, [0, 1], [{0, 1}]),
    ],
)
def test_workers_share_the_cores(count: int, cpus: list[int], expected: list[set[int]]) -> None:
    assert [worker_cpus(i, count, cpus) for i in range(count)] == expected
