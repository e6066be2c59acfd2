"""How a rollout looks at answers: one summary value per output for the
distribution check, and whether two answers to the same request agree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mlserve.router.plan import OutputComparison


def agree(stable: np.ndarray, canary: np.ndarray, how: OutputComparison) -> bool:
    if stable.shape != canary.shape:
        return False
    if how.kind == "argmax":
        axis = -1 if stable.ndim > 1 else None
        return bool(np.array_equal(np.argmax(stable, axis=axis), np.argmax(canary, axis=axis)))
    if how.kind == "equal" or stable.dtype.kind not in "fc":
        return bool(np.array_equal(stable, canary))
    return bool(np.allclose(canary, stable, rtol=how.rtol, atol=how.atol))


def summaries(
    outputs: Any, compare: Mapping[str, OutputComparison]
) -> tuple[dict[str, float], frozenset[str]]:
    """One value per output of one answer, for the distribution check: the
    class (argmax, or an integer output's first value), else the mean; and
    the names of the outputs whose values are classes."""
    summary = {}
    classes = []
    for output in outputs:
        data = output.data
        if data.size == 0 or data.dtype.kind not in "biuf":
            continue
        how = compare.get(output.name)
        if how is not None and how.kind == "argmax":
            row = data.reshape(data.shape[0], -1)[0] if data.ndim > 1 else data
            summary[output.name] = float(np.argmax(row))
            classes.append(output.name)
        elif data.dtype.kind in "biu":
            summary[output.name] = float(data.flat[0])
            classes.append(output.name)
        elif data.size <= 64:  # numpy's mean costs microseconds on a small array
            values = data.ravel().tolist()
            summary[output.name] = sum(values) / len(values)
        else:
            summary[output.name] = float(data.mean())
    return summary, frozenset(classes)
