"""The batcher's reusable input buffers: reused per thread, grown only for a
larger batch, never shared between threads or kept for BYTES inputs, and
dropped when an output aliases them."""

from __future__ import annotations

import threading

import numpy as np

from mlserve.runtime.batching.gather_buffers import GatherBuffers

F32 = np.dtype(np.float32)


def test_a_smaller_batch_reuses_the_first_rows_of_the_buffer() -> None:
    buffers = GatherBuffers()
    big = buffers.take("x", F32, (4,), 8)
    small = buffers.take("x", F32, (4,), 3)
    assert big.shape == (8, 4) and small.shape == (3, 4)
    assert small.flags.c_contiguous
    assert np.shares_memory(big, small)


def test_a_larger_batch_grows_the_buffer() -> None:
    buffers = GatherBuffers()
    small = buffers.take("x", F32, (4,), 3)
    big = buffers.take("x", F32, (4,), 8)
    assert big.shape == (8, 4)
    assert not np.shares_memory(small, big)
    assert np.shares_memory(buffers.take("x", F32, (4,), 5), big)


def test_inputs_get_their_own_buffers() -> None:
    buffers = GatherBuffers()
    assert not np.shares_memory(buffers.take("x", F32, (4,), 2), buffers.take("y", F32, (4,), 2))


def test_one_buffer_per_input_whatever_the_shape_or_datatype() -> None:
    """A model with variable dimensions sees many row shapes: they share the
    input's one buffer, so memory stays bounded by the largest batch."""
    buffers = GatherBuffers()
    first = buffers.take("x", F32, (4,), 8)  # 128 bytes
    for dtype, row_shape, rows in [
        (np.dtype(np.int64), (4,), 4),
        (F32, (2, 2), 8),
        (np.dtype(np.float16), (3,), 5),
    ]:
        taken = buffers.take("x", dtype, row_shape, rows)
        assert taken.shape == (rows, *row_shape) and taken.dtype == dtype
        assert taken.flags.c_contiguous
        assert np.shares_memory(taken, first)
    wider = buffers.take("x", F32, (16,), 8)  # 512 bytes: grows
    assert not np.shares_memory(wider, first)


def test_bytes_inputs_get_a_new_array_every_time() -> None:
    buffers = GatherBuffers()
    first = buffers.take("s", np.dtype(object), (), 2)
    assert first is not buffers.take("s", np.dtype(object), (), 2)


def test_threads_never_share_a_buffer() -> None:
    buffers = GatherBuffers()
    mine = buffers.take("x", F32, (4,), 8)
    theirs: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: theirs.append(buffers.take("x", F32, (4,), 8)))
    thread.start()
    thread.join()
    assert not np.shares_memory(mine, theirs[0])


def test_a_buffer_an_output_aliases_is_not_reused() -> None:
    buffers = GatherBuffers()
    fed = buffers.take("x", F32, (4,), 8)
    fed[:] = 1.0
    output = fed[:2]  # as if the model returned a view of its input
    unrelated = np.zeros(3, F32)
    buffers.forget_aliased([unrelated])
    assert np.shares_memory(buffers.take("x", F32, (4,), 8), fed)
    buffers.forget_aliased([output])
    buffers.take("x", F32, (4,), 8)[:] = 2.0
    assert (output == 1.0).all()
