"""One BLAS thread per worker process.

The core's matrix products (the multivariate projections of a stream's segment, e.g. a
5 000-event fetch times 26 components) are exact: their inputs are quantised to multiples of powers
of two (core/multivariate/design.py, "Exactness"), so the number of BLAS threads
changes what they cost, never their result. OpenBLAS splits a
product of more than about 260 000 multiply-adds over every core and its idle threads
then spin, waiting for the next one: on the benchmark's 2 cores (docs/performance.md)
that took a core from the broker, Redis and the worker's own event loop, and cost the
monitor 41 us of CPU per single JSON event against 26 us with one thread. A worker is
one process per core (the scaling model), so it gains nothing from more.
"""

from __future__ import annotations

from threadpoolctl import threadpool_info, threadpool_limits  # type: ignore[import-untyped]

__all__ = ["blas_threads", "single_threaded_blas"]


def single_threaded_blas() -> None:
    """Limit the BLAS libraries loaded in this process to one thread each."""
    threadpool_limits(limits=1, user_api="blas")


def blas_threads() -> list[int]:
    """Threads of each BLAS library loaded in this process (for tests and tools)."""
    return [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]
