"""Numba CPU kernels (``numba.njit``) on NumPy arrays, one module per op family, and thread rules."""
import contextlib
import functools
import os

# Numba's thread pool is OpenMP's here. By default an idle OpenMP thread spins for a while before
# sleeping, and on 2 cores it spins on the core that OpenBLAS's thread needs for the next matrix
# product (and the other way round): a training step of the main job took 0.34 s with spinning
# threads and 0.17-0.19 s without (benchmarks/RESULTS.md, session 4). OpenMP reads this when its
# library loads, at the first parallel kernel; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

# Below this many loop steps, waking Numba's worker threads costs more than the loop itself
# (milliseconds instead of microseconds on a busy machine), so such calls run on one thread.
PARALLEL_WORK = 1 << 16


@contextlib.contextmanager
def threads_for(work):
    """Run the ``prange`` kernels inside on one thread when ``work`` loop steps are too few to share."""
    previous = numba.get_num_threads()
    numba.set_num_threads(1 if work < PARALLEL_WORK else previous)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


# Below this many multiply-adds, a matrix product runs faster on one BLAS thread: OpenBLAS's
# threads spin-wait for work, and for a small product the hand-over costs more than the sum
# (100x more on a busy machine: 2 ms on one thread against 180 ms on two for a 1x1 convolution
# of MobileNetV2's size).
PARALLEL_PRODUCT = 1 << 26


@functools.lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # without threadpoolctl, BLAS keeps its own thread count
        return None
    return ThreadpoolController()


def blas_threads_for(multiply_adds):
    """A ``with`` block whose matrix products use one BLAS thread when they are small."""
    controller = _blas_controller()
    if controller is None or multiply_adds >= PARALLEL_PRODUCT:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")
