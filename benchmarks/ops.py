"""Forward + backward time of minidl's DeepLab ops against PyTorch, each framework in its own process.

    python benchmarks/ops.py [--repeat 10] [--rounds 3] [--only conv] [--device cpu|cuda] [--dtype float32]
                             [--upstream random|ones] [--threads N] [--same-process]

Each case runs the same expression in both frameworks (``lib`` is minidl or torch), on DeepLab's shapes, and
reports the median and the best time of each and the ratios minidl / torch of both (below 1: minidl is faster).

On the CPU, each framework runs in its own process with its own defaults (benchmarks/isolate.py): one process
imports only minidl, the other only torch, each its framework first, and both build the same inputs and
upstream gradient from NumPy with the same seed. A process times all selected cases, case after case: a warm-up
call (Numba's compilation, PyTorch's lazy initialisation), then ``--repeat`` calls. One round is minidl's
process, then torch's; there are ``--rounds`` rounds, so a change in the machine's load falls on both, and the
median and best are over all calls of all rounds. In one process the two would share OpenMP, and whichever
loads it first decides how idle threads wait for both: torch's default (spinning) inflated minidl's 2-thread
times twofold, PASSIVE slows PyTorch (benchmarks/RESULTS.md, session 7).

``--same-process`` runs both in this process instead, taking turns, one call each; it is the default for
``--device cuda``, where the kernels do not share CPU threads and one process pays CUDA's initialisation once
(``--rounds`` does not apply). The header line says which way a table was measured; for separate processes,
also what each loaded and the thread settings it ran with (OMP_WAIT_POLICY, GOMP_SPINCOUNT,
OPENBLAS_THREAD_TIMEOUT). The upstream gradient is random normal or all ones (``--upstream``), the same array
for both. Nothing here asserts a speed: the table is the result; record it, with the command, in
benchmarks/RESULTS.md. ``--threads 1`` runs each framework on one thread (PyTorch, BLAS and Numba).

Importing this module imports neither framework (book chapter 10 imports it for ``CASES`` and ``time_case``).
"""
import argparse
import importlib
import os
import platform
import statistics
import sys
import time

OPENMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")  # as the process started, before minidl sets its default

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.isolate import alternate, how_they_ran, report, take_turns  # noqa: E402


def openmp_wait_policy(policy=OPENMP_WAIT_POLICY):
    """How idle OpenMP threads wait in this process, in words (``policy``: OMP_WAIT_POLICY as it started).

    For ``--same-process``: torch, imported first, starts OpenMP before minidl sets PASSIVE, so only a value set
    before the process started applies: without one, both frameworks' idle threads spin through the other's
    turn, which inflated minidl's 2-thread times here (benchmarks/RESULTS.md, session 7).
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


def set_threads(count, frameworks=("minidl", "torch")):
    """The thread counts of ``frameworks`` (PyTorch's; Numba's for minidl) and of BLAS, all to ``count``."""
    import threadpoolctl

    if "torch" in frameworks:
        import torch

        torch.set_num_threads(count)
    if "minidl" in frameworks:
        import minidl.kernels.cpu  # noqa: F401  (sets minidl's OpenMP wait policy before Numba's threads start)
        import numba

        numba.set_num_threads(count)
    threadpoolctl.threadpool_limits(count)  # the BLAS libraries loaded by now


def thread_count(lib):
    """How many threads ``lib`` (minidl or torch) computes with: PyTorch's, or Numba's for minidl."""
    if lib.__name__ == "torch":
        return lib.get_num_threads()
    import minidl.kernels.cpu  # noqa: F401  (as in set_threads)
    import numba

    return numba.get_num_threads()


def _sync(lib, device):
    if device == "cuda":
        if lib.__name__ == "torch":
            lib.cuda.synchronize()
        else:
            lib.backend.cupy().cuda.Device().synchronize()


def _upstream_array(out, kind, dtype, rng):
    shape = tuple(out.shape)
    return np.ones(shape, dtype) if kind == "ones" else rng.standard_normal(shape).astype(dtype)


class Runner:
    """One framework's inputs and upstream gradient for a case; ``once()`` times one forward + backward.

    The arrays come from NumPy with a fixed seed, so every process and framework gets the same ones."""

    def __init__(self, lib, shapes, fn, device, dtype, upstream, seed=0):
        rng = np.random.default_rng(seed)
        self.lib, self.fn, self.device = lib, fn, device
        self.tensors = [lib.tensor(rng.standard_normal(s).astype(dtype), device=device, requires_grad=True)
                        for s in shapes]
        self.upstream = lib.tensor(_upstream_array(fn(lib, *self.tensors), upstream, dtype, rng), device=device)

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
    return statistics.median(take_turns({"case": runner.once}, repeat, warmup=1)["case"])


def time_side_by_side(shapes, fn, repeat, device, dtype, upstream):
    """Seconds of every call, (minidl's, torch's), in this process, the two frameworks taking turns after one
    warm-up call each."""
    import torch

    import minidl

    runners = {lib.__name__: Runner(lib, shapes, fn, device, dtype, upstream) for lib in (minidl, torch)}
    times = take_turns({name: runner.once for name, runner in runners.items()}, repeat, warmup=1)
    return times["minidl"], times["torch"]


def selected_cases(only):
    """The cases whose family or name contains ``only`` (all if it is empty)."""
    return [case for case in CASES if not only or only in case[1] or only in case[0]]


def _side(args):
    """One framework, all selected cases, in this process: report {"times": {case: [seconds, ...]}, ...}."""
    lib = importlib.import_module(args.side)
    if args.threads:
        set_threads(args.threads, (args.side,))
    times, missing = {}, {}
    for name, family, target, shapes, fn in selected_cases(args.only):
        try:
            runner = Runner(lib, shapes, fn, args.device, args.dtype, args.upstream)
            times[name] = take_turns({name: runner.once}, args.repeat, warmup=1)[name]
        except (AttributeError, NotImplementedError) as e:  # an op that does not exist yet
            missing[name] = str(e)
    report({"times": times, "missing": missing, "version": lib.__version__, "threads": thread_count(lib)})


def _in_own_processes(args):
    """Every selected case's seconds, {case: (minidl's, torch's)}, from ``args.rounds`` rounds of one minidl
    process then one torch process; a missing op's entry is its error; and the header line."""
    arguments = ["--only", args.only, "--repeat", str(args.repeat), "--device", args.device, "--dtype", args.dtype,
                 "--upstream", args.upstream] + (["--threads", str(args.threads)] if args.threads else [])
    times, last = alternate(os.path.abspath(__file__), arguments, args.rounds)
    ours, theirs = last["minidl"], last["torch"]
    header = (f"# minidl {ours['version']} vs torch {theirs['version']}, device {args.device}, {args.dtype}, "
              f"{how_they_ran(args.rounds, last)}, {args.repeat} calls each a round after a warm-up, "
              f"upstream gradient {args.upstream}, threads minidl {ours['threads']} / torch {theirs['threads']}, "
              f"{platform.processor() or platform.machine()}")
    results = {}
    for name, *_ in selected_cases(args.only):
        missing = ours["missing"].get(name) or theirs["missing"].get(name)
        results[name] = missing or (times["minidl"][name], times["torch"][name])
    return results, header


def _in_this_process(args):
    """As ``_in_own_processes``, the two frameworks taking turns in this process."""
    import torch

    import minidl

    if args.threads:
        set_threads(args.threads)
    results = {}
    for name, family, target, shapes, fn in selected_cases(args.only):
        try:
            results[name] = time_side_by_side(shapes, fn, args.repeat, args.device, args.dtype, args.upstream)
        except (AttributeError, NotImplementedError) as e:  # an op that does not exist yet
            results[name] = str(e)
    header = (f"# minidl {minidl.__version__} vs torch {torch.__version__}, device {args.device}, {args.dtype}, "
              f"one process, taking turns, {args.repeat} calls each, upstream gradient {args.upstream}, "
              f"torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
              f"OpenMP wait policy: {openmp_wait_policy()}")
    return results, header


def _row(name, family, target, seconds):
    if isinstance(seconds, str):
        return f"| {name} | {family} | missing: {seconds} | | | |"
    ours, theirs = seconds
    medians = statistics.median(ours), statistics.median(theirs)
    bests = min(ours), min(theirs)
    ratio = medians[0] / medians[1]
    verdict = "" if target is None else (f"≤ {target} ✓" if ratio <= target else f"≤ {target} ✗")
    return (f"| {name} | {family} | {medians[0] * 1e3:.1f} / {bests[0] * 1e3:.1f} | "
            f"{medians[1] * 1e3:.1f} / {bests[1] * 1e3:.1f} | {ratio:.2f} / {bests[0] / bests[1]:.2f} | {verdict} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed calls of each case in each process")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one minidl process, then one torch process")
    parser.add_argument("--only", default="", help="run the cases whose family or name contains this")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--upstream", default="random", choices=["random", "ones"],
                        help="the upstream gradient: random normal or all ones")
    parser.add_argument("--threads", type=int, help="threads for PyTorch, BLAS and Numba (default: theirs)")
    parser.add_argument("--same-process", action="store_true",
                        help="both frameworks in this process, taking turns (the default on cuda)")
    parser.add_argument("--side", choices=["minidl", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return _side(args)
    same_process = args.same_process or args.device == "cuda"
    results, header = (_in_this_process if same_process else _in_own_processes)(args)
    print(header)
    print("| op | family | minidl ms median / best | torch ms median / best | minidl / torch median / best | target |")
    print("|---|---|---:|---:|---:|---:|")
    for name, family, target, *_ in selected_cases(args.only):
        print(_row(name, family, target, results[name]), flush=True)


if __name__ == "__main__":
    main()
