"""One training step of DeepLab v3+ in minidl against its PyTorch twin: same weights, same batch, SGD, taking turns.

    python benchmarks/step.py [--backbone mobilenetv2] [--batch-size 4] [--size 129] [--repeat 10]
    python benchmarks/step.py --backbone resnet_small --batch-size 16 --size 97 --head-channels 64 --classes 7
    python benchmarks/step.py --threads 1 ...     # PyTorch, BLAS and Numba on one thread each

A step is forward, cross-entropy, backward and an SGD update (momentum 0.9).
The two frameworks take turns, one step each, after two warm-up steps each;
the table gives the median and the best step time and their ratios. With
``--algorithms im2col,auto`` minidl runs once per convolution algorithm
(``minidl.nn.functional.conv_algorithm``), all in the same turns.
"""
import argparse
import os
import statistics
import sys
import time

OPENMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")  # as the process started, before minidl sets its default

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minidl  # noqa: E402
import reference.models.deeplab as twins  # noqa: E402
from benchmarks.ops import openmp_wait_policy, set_threads  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="mobilenetv2")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, default=129)
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--head-channels", type=int, default=256)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--algorithms", default="auto", help="comma-separated conv algorithms for minidl")
    p.add_argument("--threads", type=int, help="threads for PyTorch, BLAS and Numba (default: theirs)")
    return p.parse_args(argv)


def steppers(args):
    """One function per runner that does a training step and returns its seconds: minidl per algorithm, then torch."""
    options = dict(backbone=args.backbone, num_classes=args.classes, head_channels=args.head_channels)
    ours = minidl.models.deeplabv3plus(**options).train()
    twin = twins.deeplabv3plus(**options).train()
    twin.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch_size, 3, args.size, args.size)).astype(np.float32)
    labels = rng.integers(0, args.classes, (args.batch_size, args.size, args.size))
    our_sgd = minidl.optim.SGD(ours.parameters(), lr=1e-4, momentum=0.9)
    twin_sgd = torch.optim.SGD(twin.parameters(), lr=1e-4, momentum=0.9)

    def minidl_step(algorithm):
        start = time.perf_counter()
        with minidl.nn.functional.conv_algorithm(algorithm):
            loss = minidl.nn.functional.cross_entropy(ours(minidl.tensor(images)), minidl.tensor(labels))
            our_sgd.zero_grad()
            loss.backward()
            our_sgd.step()
        return time.perf_counter() - start

    def torch_step():
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(images)), torch.from_numpy(labels))
        twin_sgd.zero_grad()
        loss.backward()
        twin_sgd.step()
        return time.perf_counter() - start

    runners = {f"minidl ({a})": (lambda a=a: minidl_step(a)) for a in args.algorithms.split(",")}
    runners["torch"] = torch_step
    return runners


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        set_threads(args.threads)
    runners = steppers(args)
    times = {name: [] for name in runners}
    for turn in range(args.repeat + 2):
        for name, step in runners.items():
            seconds = step()
            if turn >= 2:  # two warm-up steps: compilation, caches, first allocations
                times[name].append(seconds)
    print(f"# DeepLab v3+ {args.backbone}, batch {args.batch_size} × {args.size}², {args.classes} classes, "
          f"head {args.head_channels}, {args.repeat} steps each (taking turns), "
          f"torch threads {torch.get_num_threads()}, OpenMP wait policy: {openmp_wait_policy(OPENMP_WAIT_POLICY)}")
    print("| runner | median s | best s | ÷ torch median | ÷ torch best |")
    print("|---|---:|---:|---:|---:|")
    reference = statistics.median(times["torch"]), min(times["torch"])
    for name, kept in times.items():
        median, best = statistics.median(kept), min(kept)
        print(f"| {name} | {median:.3f} | {best:.3f} | {median / reference[0]:.2f} | {best / reference[1]:.2f} |")


if __name__ == "__main__":
    main()
