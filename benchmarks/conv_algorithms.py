"""im2col against Winograd's F(2×2, 3×3) for stride-1 3×3 convolutions, shape by shape, and what 'auto' picks.

    python benchmarks/conv_algorithms.py [--repeat 7]

Forward + backward (upstream gradient of ones), median of ``--repeat`` after two warm-up calls, each algorithm forced
with ``conv_algorithm``. ``W MACs / I MACs`` is Winograd's multiply-add count, half-outside tiles included, over
im2col's: the quantity ``conv._winograd_pays`` compares with its threshold.
"""
import argparse
import time

import minidl  # before NumPy, as the `minidl` command: its thread rules need it (minidl/kernels/cpu/__init__.py)
import numpy as np  # noqa: I001
import minidl.nn.functional as F
from minidl.functional import conv, winograd

# (input shape, output channels, rate): ASPP and backbone sizes of the book and the main job
CASES = [((2, 256, 17, 17), 256, 1), ((2, 256, 17, 17), 256, 6), ((8, 256, 17, 17), 256, 1),
         ((4, 256, 33, 33), 256, 2), ((4, 256, 33, 33), 256, 12), ((1, 256, 33, 33), 256, 1),
         ((16, 64, 7, 7), 64, 1), ((16, 64, 7, 7), 64, 2), ((16, 128, 7, 7), 128, 2), ((16, 32, 13, 13), 32, 1),
         ((16, 16, 25, 25), 16, 1), ((8, 64, 9, 9), 64, 2), ((8, 64, 9, 9), 64, 3), ((8, 64, 17, 17), 64, 1),
         ((8, 32, 17, 17), 32, 1)]


def milliseconds(shape, out_channels, rate, algorithm, repeat, rng):
    x0 = rng.standard_normal(shape).astype(np.float32)
    w0 = (rng.standard_normal((out_channels, shape[1], 3, 3)) * 0.01).astype(np.float32)

    def run():
        x, w = minidl.tensor(x0, requires_grad=True), minidl.tensor(w0, requires_grad=True)
        with conv.conv_algorithm(algorithm):
            y = F.conv2d(x, w, padding=rate, dilation=rate)
            y.backward(minidl.ones(*y.shape))

    for _ in range(2):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| input | rate | W MACs / I MACs | im2col ms | Winograd ms | Winograd / im2col | auto picks |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for shape, out_channels, rate in CASES:
        x, w = minidl.zeros(*shape), minidl.zeros(out_channels, shape[1], 3, 3)
        tiling = winograd.Tiling(x.shape, (rate, rate), (rate, rate))
        macs = 16 * tiling.count / (9 * shape[0] * tiling.out_hw[0] * tiling.out_hw[1])
        picks = "Winograd" if conv._use_winograd(x, w, (1, 1), (rate, rate), (rate, rate), 1) else "im2col"
        im2col, wino = (milliseconds(shape, out_channels, rate, a, args.repeat, rng) for a in ("im2col", "winograd"))
        print(f"| {shape} | {rate} | {macs:.2f} | {im2col:.2f} | {wino:.2f} | {wino / im2col:.2f} | {picks} |")


if __name__ == "__main__":
    main()
