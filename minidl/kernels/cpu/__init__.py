"""Numba CPU kernels (``numba.njit``) on NumPy arrays, one module per op family, and thread rules."""
import contextlib
import ctypes
import functools
import os
import sys

# Two thread pools share the cores: OpenMP's, which runs Numba's prange kernels, and OpenBLAS's, which runs
# NumPy's matrix products. An idle thread of either spins for a while before it sleeps, holding the core that
# the other pool's next call needs, and a training step hands over between them hundreds of times. OpenBLAS's
# threads spin for about a tenth of a second after a product unless OPENBLAS_THREAD_TIMEOUT, which OpenBLAS
# reads once when NumPy loads it, says less; ``import minidl`` sets it to 2^14 cycles when NumPy is not loaded
# yet (minidl/__init__.py). Then OpenMP's threads spin briefly too (GOMP_SPINCOUNT, about 0.1 ms), and every
# product and every loop worth it uses both pools' threads: the main job's step took 0.11 s, against 0.135 s
# with OpenMP's threads sleeping at once and small products on one thread (benchmarks/RESULTS.md, session 8).
# When NumPy came first, OpenBLAS's long spin stays: OpenMP's threads then sleep as soon as they are idle
# (OMP_WAIT_POLICY=PASSIVE; spinning, a step took 0.34 s), and only large products and loops use a second
# thread. OpenMP reads its variables when its library loads, at the first parallel kernel; a value the user
# set for any of them is kept.
BLAS_SPINS_BRIEFLY = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "").strip() in {str(n) for n in range(17)}
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ.update({"GOMP_SPINCOUNT": "10000"} if BLAS_SPINS_BRIEFLY else {"OMP_WAIT_POLICY": "PASSIVE"})

import numba  # noqa: E402

# A training step allocates the same few hundred arrays every iteration. glibc's malloc serves a large one with
# fresh pages from the kernel and hands them back when it is freed (at 128 KiB, a bar that adapts to what was
# freed, and when the heap's free top grows past a trim threshold), and every fresh page costs a page fault when
# first written: the main job's step took 0.10 s, against 0.088 s with freed memory kept for reuse
# (benchmarks/RESULTS.md, session 8). So minidl raises that bar to glibc's largest (32 MiB) and never trims the
# heap: freed memory stays in the process for the next array, and the process's resident memory stays at its
# peak. MINIDL_KEEP_FREED_MEMORY=0 leaves malloc as it was.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters, from glibc's malloc.h


def _keep_freed_memory():
    if os.environ.get("MINIDL_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # a C library other than glibc
        return False


KEEPS_FREED_MEMORY = _keep_freed_memory()

@numba.njit(cache=True, inline="always")
def dot(x, y):
    """Σ x·y over equal-length 1-D views, in the arrays' own precision: a loop LLVM vectorizes in kernels that
    allow reassociation. Callers that add up many of them keep the total in float64."""
    total = x.dtype.type(0)
    for q in range(x.size):
        total += x[q] * y[q]
    return total


# Below this many loop steps, handing work to Numba's other threads costs more than it saves, so such
# calls run on one thread. Waking a sleeping thread costs far more than reaching a spinning one (milliseconds
# instead of microseconds on a busy machine), so the bar is higher when OpenMP's threads sleep at once.
PARALLEL_WORK = 1 << 12 if BLAS_SPINS_BRIEFLY else 1 << 16


@contextlib.contextmanager
def threads_for(work):
    """Run the ``prange`` kernels inside on one thread when ``work`` loop steps are too few to share."""
    previous = numba.get_num_threads()
    numba.set_num_threads(1 if work < PARALLEL_WORK else previous)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def threads_beside_blas(work):
    """As ``threads_for``, for a loop between two matrix products: on one thread while OpenBLAS's threads spin
    long, since a Numba thread then waits for the core a spinning BLAS thread holds."""
    return threads_for(work if BLAS_SPINS_BRIEFLY else 0)


# Below this many multiply-adds, a matrix product runs on one BLAS thread while OpenBLAS's threads spin long:
# the spinning helper then holds the other core through the Numba kernels that follow (on a busy machine a
# 1x1 convolution of MobileNetV2's size took 2 ms on one thread against 180 ms on two). With a brief spin
# every product may use BLAS's threads.
PARALLEL_PRODUCT = 0 if BLAS_SPINS_BRIEFLY else 1 << 26


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
