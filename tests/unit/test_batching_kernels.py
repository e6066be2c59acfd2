"""Batching kernels: the compiled module and its Python twin agree."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserve.ext import _batching_py, batching
from tests.unit.twins import EXPECTED_IMPLEMENTATION, compiled, implementations

COMPILED = compiled("batching")
IMPLEMENTATIONS = implementations("batching")


def test_normal_install_selects_the_compiled_kernels() -> None:
    assert batching.IMPLEMENTATION == EXPECTED_IMPLEMENTATION


@pytest.mark.parametrize("kernels", IMPLEMENTATIONS)
def test_select_batch(kernels) -> None:
    keys = ["a", "b", "a", "a", "b", "a"]
    rows = [2, 1, 3, 4, 1, 1]
    assert kernels.select_batch(keys, rows, 5) == ([0, 2], 5)
    assert kernels.select_batch(keys, rows, 100) == ([0, 2, 3, 5], 10)
    assert kernels.select_batch(keys, rows, 1) == ([0], 2)  # a lone oversize head still goes
    assert kernels.select_batch([], [], 8) == ([], 0)


@given(
    keys=st.lists(st.sampled_from(["k1", "k2", ("t", 1)]), max_size=40),
    data=st.data(),
    max_rows=st.integers(1, 64),
)
def test_select_batch_twins_agree(keys: list, data: st.DataObject, max_rows: int) -> None:
    rows = data.draw(st.lists(st.integers(1, 9), min_size=len(keys), max_size=len(keys)))
    if COMPILED is None:
        pytest.skip("built with MLSERVE_NO_EXTENSIONS=1: no compiled module to compare")
    expected = _batching_py.select_batch(keys, rows, max_rows)
    assert COMPILED.select_batch(keys, rows, max_rows) == expected


@pytest.mark.parametrize("kernels", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", ["<f4", "<i8", "|b1", "<f2", "O"])
@pytest.mark.parametrize("requests", [1, 8, 64])
def test_gather_then_split_round_trip(kernels, dtype: str, requests: int) -> None:
    rng = np.random.default_rng(requests)
    sizes = rng.integers(1, 4, size=requests).tolist()
    arrays = [
        (rng.standard_normal((n, 3, 2)) * 10).astype(dtype)
        if dtype != "O"
        else np.array([[[f"s{i}"] * 2] * 3] * n, dtype=object)
        for i, n in enumerate(sizes)
    ]
    out = np.empty((sum(sizes), 3, 2), dtype=arrays[0].dtype)
    kernels.gather_rows(arrays, out)
    np.testing.assert_array_equal(out, np.concatenate(arrays))
    views = kernels.split_rows(out, sizes)
    assert len(views) == requests
    for original, view in zip(arrays, views, strict=True):
        np.testing.assert_array_equal(view, original)
        assert view.base is out or view.base is out.base  # a view, not a copy


@pytest.mark.parametrize("kernels", IMPLEMENTATIONS)
def test_gather_refuses_a_size_mismatch(kernels) -> None:
    with pytest.raises(ValueError):
        kernels.gather_rows([np.zeros((2, 3), np.float32)], np.empty((3, 3), np.float32))
