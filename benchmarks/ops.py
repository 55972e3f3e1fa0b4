"""Forward + backward time of minidl's DeepLab ops against PyTorch, measured in the same run.

    python benchmarks/ops.py [--repeat 10] [--only conv] [--device cpu|cuda] [--dtype float32] [--upstream random|ones]
                             [--threads N]

Each case runs the same expression in both frameworks (``lib`` is minidl or
torch), on DeepLab's shapes, and reports the median and the best time of
each and the ratios minidl / torch of both (below 1: minidl is faster). The
two frameworks take turns, one call each, so a change in the machine's load
falls on both. The first call of each is a warm-up, so Numba's compilation
and PyTorch's lazy initialisation are not counted. The upstream gradient is
random normal or all ones (``--upstream``), the same array for both. Nothing
here asserts a speed: the table is the result; record it, with the command,
in benchmarks/RESULTS.md. ``--threads 1`` runs both frameworks on one thread
(PyTorch, BLAS and Numba): on a machine whose other jobs keep the cores busy,
one thread a framework is what a comparison can still measure fairly.
"""
import argparse
import os
import platform
import statistics
import time

OPENMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")  # as the process started, before minidl sets its default

import numpy as np
import torch

import minidl


def openmp_wait_policy(policy=OPENMP_WAIT_POLICY):
    """How idle OpenMP threads wait in this process, in words (``policy``: OMP_WAIT_POLICY as it started).

    torch, imported first, starts OpenMP before minidl sets PASSIVE, so only a value set before the process
    started applies: without one, both frameworks' idle threads spin through the other's turn, which inflated
    minidl's 2-thread times here (benchmarks/RESULTS.md, session 7).
    """
    return policy or "torch's default (idle threads spin; minidl's 2-thread times inflated)"


# (name, family, target ratio, input shapes, expression)
CASES = [
    ("conv 3x3 rate 2, 256->256, 33x33, N=4", "conv", 1.0, [(4, 256, 33, 33), (256, 256, 3, 3)],
     lambda lib, x, w: lib.nn.functional.conv2d(x, w, padding=2, dilation=2)),
    ("conv 3x3 rate 12, 256->256, 33x33, N=4", "conv", 1.0, [(4, 256, 33, 33), (256, 256, 3, 3)],
     lambda lib, x, w: lib.nn.functional.conv2d(x, w, padding=12, dilation=12)),
    ("conv 1x1, 512->256, 33x33, N=4", "conv", 1.3, [(4, 512, 33, 33), (256, 512, 1, 1)],
     lambda lib, x, w: lib.nn.functional.conv2d(x, w)),
    ("conv 3x3 stride 2 stem, 3->32, 129x129, N=4", "conv", 1.3, [(4, 3, 129, 129), (32, 3, 3, 3)],
     lambda lib, x, w: lib.nn.functional.conv2d(x, w, stride=2, padding=1)),
    ("depthwise 3x3 rate 2, 256 ch, 65x65, N=4", "depthwise", 0.7, [(4, 256, 65, 65), (256, 1, 3, 3)],
     lambda lib, x, w: lib.nn.functional.conv2d(x, w, padding=2, dilation=2, groups=256)),
    ("depthwise 3x3 stride 2, 128 ch, 129x129, N=4", "depthwise", 0.7, [(4, 128, 129, 129), (128, 1, 3, 3)],
     lambda lib, x, w: lib.nn.functional.conv2d(x, w, stride=2, padding=1, groups=128)),
    ("depthwise 3x3, 76 ch, 25x25, N=16 (the main job's decoder)", "depthwise", 0.7,
     [(16, 76, 25, 25), (76, 1, 3, 3)],
     lambda lib, x, w: lib.nn.functional.conv2d(x, w, padding=1, groups=76)),
    ("bilinear 65->513, 21 ch, N=4, align_corners=True", "bilinear", 0.7, [(4, 21, 65, 65)],
     lambda lib, x: lib.nn.functional.interpolate(x, size=(513, 513), mode="bilinear", align_corners=True)),
    ("bilinear 65->513, 21 ch, N=4, align_corners=False", "bilinear", 0.7, [(4, 21, 65, 65)],
     lambda lib, x: lib.nn.functional.interpolate(x, size=(513, 513), mode="bilinear", align_corners=False)),
    ("bilinear 33->129, 256 ch, N=4, align_corners=False", "bilinear", 0.7, [(4, 256, 33, 33)],
     lambda lib, x: lib.nn.functional.interpolate(x, size=(129, 129), mode="bilinear", align_corners=False)),
    ("batch norm (train), 256 ch, 33x33, N=4", "norm", None, [(4, 256, 33, 33), (256,), (256,)],
     lambda lib, x, w, b: lib.nn.functional.batch_norm(x, None, None, w, b, training=True)),
    ("batch norm (train), 64 ch, 25x25, N=16 (the main job's decoder)", "norm", None,
     [(16, 64, 25, 25), (64,), (64,)],
     lambda lib, x, w, b: lib.nn.functional.batch_norm(x, None, None, w, b, training=True)),
    ("max pool 3x3 stride 2, 64 ch, 129x129, N=4", "pool", None, [(4, 64, 129, 129)],
     lambda lib, x: lib.nn.functional.max_pool2d(x, 3, 2, 1)),
]


def set_threads(count):
    """PyTorch's, BLAS's and Numba's thread counts, all to ``count``."""
    import numba
    import threadpoolctl

    torch.set_num_threads(count)
    threadpoolctl.threadpool_limits(count)
    numba.set_num_threads(count)


def _sync(lib, device):
    if device == "cuda":
        if lib is torch:
            torch.cuda.synchronize()
        else:
            minidl.backend.cupy().cuda.Device().synchronize()


def _upstream_array(out, kind, dtype, rng):
    shape = tuple(out.shape)
    return np.ones(shape, dtype) if kind == "ones" else rng.standard_normal(shape).astype(dtype)


class Runner:
    """One framework's inputs and upstream gradient for a case; ``once()`` times one forward + backward."""

    def __init__(self, lib, shapes, fn, device, dtype, upstream, seed=0):
        rng = np.random.default_rng(seed)
        make = torch.tensor if lib is torch else minidl.tensor
        self.lib, self.fn, self.device = lib, fn, device
        self.tensors = [make(rng.standard_normal(s).astype(dtype), device=device, requires_grad=True) for s in shapes]
        self.upstream = make(_upstream_array(fn(lib, *self.tensors), upstream, dtype, rng), device=device)

    def once(self):
        for t in self.tensors:
            t.grad = None
        _sync(self.lib, self.device)
        start = time.perf_counter()
        self.fn(self.lib, *self.tensors).backward(self.upstream)
        _sync(self.lib, self.device)
        return time.perf_counter() - start


def time_case(lib, shapes, fn, repeat, device, dtype, upstream="random"):
    """Median seconds of forward + backward of ``fn`` in ``lib`` (the first call, a warm-up, not counted)."""
    runner = Runner(lib, shapes, fn, device, dtype, upstream)
    return statistics.median([runner.once() for _ in range(repeat + 1)][1:])


def time_side_by_side(shapes, fn, repeat, device, dtype, upstream):
    """Seconds of every call, (minidl's, torch's), the two frameworks taking turns after one warm-up call each."""
    runners = [Runner(lib, shapes, fn, device, dtype, upstream) for lib in (minidl, torch)]
    times = [[], []]
    for i in range(repeat + 1):
        for runner, kept in zip(runners, times):
            seconds = runner.once()
            if i:  # the first call warms up (compilation, caches)
                kept.append(seconds)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--only", default="", help="run the cases whose family or name contains this")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--upstream", default="random", choices=["random", "ones"],
                        help="the upstream gradient: random normal or all ones")
    parser.add_argument("--threads", type=int, help="threads for PyTorch, BLAS and Numba (default: theirs)")
    args = parser.parse_args(argv)
    if args.threads:
        set_threads(args.threads)
    print(f"# minidl {minidl.__version__} vs torch {torch.__version__}, device {args.device}, {args.dtype}, "
          f"{args.repeat} calls each (taking turns), upstream gradient {args.upstream}, "
          f"torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
          f"OpenMP wait policy: {openmp_wait_policy()}")
    print("| op | family | minidl ms median / best | torch ms median / best | minidl / torch median / best | target |")
    print("|---|---|---:|---:|---:|---:|")
    for name, family, target, shapes, fn in CASES:
        if args.only and args.only not in family and args.only not in name:
            continue
        try:
            ours, theirs = time_side_by_side(shapes, fn, args.repeat, args.device, args.dtype, args.upstream)
        except (AttributeError, NotImplementedError) as e:  # an op that does not exist yet
            print(f"| {name} | {family} | missing: {e} | | | |")
            continue
        medians = statistics.median(ours), statistics.median(theirs)
        bests = min(ours), min(theirs)
        ratio = medians[0] / medians[1]
        verdict = "" if target is None else (f"≤ {target} ✓" if ratio <= target else f"≤ {target} ✗")
        print(f"| {name} | {family} | {medians[0] * 1e3:.1f} / {bests[0] * 1e3:.1f} | "
              f"{medians[1] * 1e3:.1f} / {bests[1] * 1e3:.1f} | {ratio:.2f} / {bests[0] / bests[1]:.2f} | {verdict} |",
              flush=True)


if __name__ == "__main__":
    main()
