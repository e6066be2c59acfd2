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


def test_inputs_dtypes_and_row_shapes_get_their_own_buffers() -> None:
    buffers = GatherBuffers()
    x = buffers.take("x", F32, (4,), 2)
    others = [
        buffers.take("y", F32, (4,), 2),
        buffers.take("x", np.dtype(np.int64), (4,), 2),
        buffers.take("x", F32, (2, 2), 2),
    ]
    assert not any(np.shares_memory(x, other) for other in others)


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
