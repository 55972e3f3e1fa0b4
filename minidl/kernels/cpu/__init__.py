"""Numba CPU kernels (``numba.njit``) on NumPy arrays, one module per op family."""
import contextlib

import numba

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
