"""A worker process runs its BLAS libraries on one thread (runtime/blas.py)."""

from __future__ import annotations

import numpy as np

from driftline.runtime.blas import blas_threads, single_threaded_blas


def test_single_threaded_blas_limits_every_loaded_blas_to_one_thread() -> None:
    np.ones((2, 2)) @ np.ones((2, 2))  # numpy's BLAS is loaded with numpy
    assert blas_threads(), "numpy's BLAS library was not found"
    single_threaded_blas()
    assert blas_threads() == [1] * len(blas_threads())
    # Products stay what they are (the core's are exact in any summation order).
    a = np.arange(5000 * 26, dtype=np.float64).reshape(5000, 26) / 8
    b = np.arange(26 * 26, dtype=np.float64).reshape(26, 26) / 4
    assert np.array_equal(a @ b, np.einsum("nd,dk->nk", a, b))
