"""A DeepLab v3+ training step, minidl against its PyTorch twin: same weights and batch, SGD, each in its own process.

    python benchmarks/step.py [--backbone mobilenetv2] [--batch-size 4] [--size 129] [--repeat 10] [--rounds 3]
    python benchmarks/step.py --backbone resnet_small --batch-size 16 --size 97 --head-channels 64 --classes 7
    python benchmarks/step.py --threads 1 ...     # PyTorch, BLAS and Numba on one thread each
    python benchmarks/step.py --same-process ...  # both in this process, taking turns

A step is forward, cross-entropy, backward and an SGD update (momentum 0.9), on the CPU. Each framework runs
in its own process with its own defaults (benchmarks/isolate.py; why: benchmarks/ops.py): both load the twin's
initial weights from the same .npz and build the same batch from NumPy. A process does two warm-up steps, then
``--repeat`` timed ones. One round is minidl's process, then torch's; there are ``--rounds`` rounds, and the
table gives the median and the best step time over all steps of all rounds, and their ratios to torch's. With
``--algorithms im2col,auto`` minidl's process runs one model per convolution algorithm
(``minidl.nn.functional.conv_algorithm``), one step each in turn, so the algorithms share that process's load.
``--same-process`` runs all of them in this process, taking turns, as before (its header names the OpenMP wait
policy, which then decides for both frameworks).
"""
import argparse
import functools
import os
import statistics
import sys
import tempfile
import time

OPENMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")  # as the process started, before minidl sets its default

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.isolate import alternate, how_they_ran, report, take_turns  # noqa: E402
from benchmarks.ops import openmp_wait_policy, set_threads, thread_count  # noqa: E402
from benchmarks.train_step import batch, save_twin_weights, twin  # noqa: E402

WARMUP_STEPS = 2  # compilation, caches, first allocations


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="mobilenetv2")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, default=129)
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--head-channels", type=int, default=256)
    p.add_argument("--repeat", type=int, default=10, help="timed steps of each runner in each process")
    p.add_argument("--rounds", type=int, default=3, help="rounds of one minidl process, then one torch process")
    p.add_argument("--algorithms", default="auto", help="comma-separated conv algorithms for minidl")
    p.add_argument("--threads", type=int, help="threads for PyTorch, BLAS and Numba (default: theirs)")
    p.add_argument("--same-process", action="store_true", help="both frameworks in this process, taking turns")
    p.add_argument("--side", choices=["minidl", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _spec(args):
    return dict(backbone=args.backbone, head_channels=args.head_channels, num_classes=args.classes,
                batch=args.batch_size, size=args.size)


def minidl_steppers(args, weights):
    """One function per convolution algorithm that does a training step of minidl's model and returns its
    seconds (one model and optimizer per algorithm, all from ``weights``)."""
    import minidl
    from minidl import optim
    from minidl.models import deeplabv3plus

    spec = _spec(args)
    images, labels = batch(spec)

    def step(model, sgd, algorithm):
        start = time.perf_counter()
        with minidl.nn.functional.conv_algorithm(algorithm):
            loss = minidl.nn.functional.cross_entropy(model(minidl.tensor(images)), minidl.tensor(labels))
            sgd.zero_grad()
            loss.backward()
            sgd.step()
        return time.perf_counter() - start

    steppers = {}
    for algorithm in args.algorithms.split(","):
        model = deeplabv3plus(backbone=spec["backbone"], num_classes=spec["num_classes"],
                              head_channels=spec["head_channels"])
        model.load_state_dict(dict(np.load(weights).items()))
        sgd = optim.SGD(model.train().parameters(), lr=1e-4, momentum=0.9)
        steppers[f"minidl ({algorithm})"] = functools.partial(step, model, sgd, algorithm)
    return steppers


def torch_steppers(args, weights):
    """The PyTorch twin's training step, as ``{"torch": function returning its seconds}``."""
    import torch

    spec = _spec(args)
    model = twin(spec).train()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(weights).items()})
    sgd = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images, labels = batch(spec)

    def step():
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(images)), torch.from_numpy(labels))
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        return time.perf_counter() - start

    return {"torch": step}


def _side(args):
    """One framework's steps in this process: report {"times": {runner: [seconds, ...]}, ...}."""
    if args.threads:
        set_threads(args.threads, (args.side,))
    steppers = (minidl_steppers if args.side == "minidl" else torch_steppers)(args, args.weights)
    times = take_turns(steppers, args.repeat, WARMUP_STEPS)
    lib = sys.modules[args.side]
    report({"times": times, "version": lib.__version__, "threads": thread_count(lib)})


def _in_own_processes(args, weights):
    arguments = ["--backbone", args.backbone, "--batch-size", str(args.batch_size), "--size", str(args.size),
                 "--classes", str(args.classes), "--head-channels", str(args.head_channels),
                 "--repeat", str(args.repeat), "--algorithms", args.algorithms, "--weights", weights]
    arguments += ["--threads", str(args.threads)] if args.threads else []
    times, last = alternate(os.path.abspath(__file__), arguments, args.rounds)
    ours, theirs = last["minidl"], last["torch"]
    how = (f"{how_they_ran(args.rounds, last)}, {args.repeat} steps each a round after {WARMUP_STEPS} warm-up, "
           f"threads minidl {ours['threads']} / torch {theirs['threads']}")
    return {**times["minidl"], **times["torch"]}, how


def _in_this_process(args, weights):
    import torch

    if args.threads:
        set_threads(args.threads)
    times = take_turns({**minidl_steppers(args, weights), **torch_steppers(args, weights)}, args.repeat, WARMUP_STEPS)
    how = (f"one process, taking turns, {args.repeat} steps each after {WARMUP_STEPS} warm-up, "
           f"torch threads {torch.get_num_threads()}, OpenMP wait policy: {openmp_wait_policy(OPENMP_WAIT_POLICY)}")
    return times, how


def main(argv=None):
    args = parse_args(argv)
    if args.side:
        return _side(args)
    with tempfile.TemporaryDirectory() as folder:
        weights = save_twin_weights(_spec(args), folder)
        times, how = (_in_this_process if args.same_process else _in_own_processes)(args, weights)
    print(f"# DeepLab v3+ {args.backbone}, batch {args.batch_size} × {args.size}², {args.classes} classes, "
          f"head {args.head_channels}, SGD, {how}")
    print("| runner | median s | best s | ÷ torch median | ÷ torch best |")
    print("|---|---:|---:|---:|---:|")
    reference = statistics.median(times["torch"]), min(times["torch"])
    for name, kept in times.items():
        median, best = statistics.median(kept), min(kept)
        print(f"| {name} | {median:.3f} | {best:.3f} | {median / reference[0]:.2f} | {best / reference[1]:.2f} |")


if __name__ == "__main__":
    main()
