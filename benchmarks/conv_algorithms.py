"""im2col, Winograd's F(2×2, 3×3) and one product per tap for stride-1 3×3 convolutions, shape by shape, and
what 'auto' picks.

    python benchmarks/conv_algorithms.py [--repeat 7]

Forward + backward (upstream gradient of ones), median of ``--repeat`` after two warm-up calls, each algorithm forced
with ``conv_algorithm``. ``W MACs / I MACs`` is Winograd's multiply-add count, half-outside tiles included, over
im2col's, ``T MACs / I MACs`` the taps' (only where a tap reads the image): the shares ``conv._fastest`` weighs
against each algorithm's threshold.
"""
import argparse
import time

import minidl  # before NumPy, as the `minidl` command: its thread rules need it (minidl/kernels/cpu/__init__.py)
import numpy as np  # noqa: I001
import minidl.nn.functional as F
from minidl.functional import conv, taps

# (input shape, output channels, rate): ASPP and backbone sizes of the book and the main job
CASES = [((2, 256, 17, 17), 256, 1), ((2, 256, 17, 17), 256, 6), ((8, 256, 17, 17), 256, 1),
         ((4, 256, 33, 33), 256, 2), ((4, 256, 33, 33), 256, 12), ((4, 256, 33, 33), 256, 18), ((1, 256, 33, 33), 256, 1),
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
    print("| input | rate | W MACs / I MACs | T MACs / I MACs | im2col ms | Winograd ms | taps ms "
          "| Winograd / im2col | taps / im2col | auto picks |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for shape, out_channels, rate in CASES:
        x, w = minidl.zeros(*shape), minidl.zeros(out_channels, shape[1], 3, 3)
        padding = dilation = (rate, rate)
        winograd_share = conv._winograd_share(x, w, padding, dilation, 1)
        taps_share = taps.Plan(x.shape, w.shape, padding, dilation).share_of_im2col()
        picks = conv._algorithm(x, w, (1, 1), padding, dilation, 1)
        im2col, wino, per_tap = (milliseconds(shape, out_channels, rate, a, args.repeat, rng)
                                 for a in ("im2col", "winograd", "taps"))
        print(f"| {shape} | {rate} | {winograd_share:.2f} | {taps_share:.2f} | {im2col:.2f} | {wino:.2f} | "
              f"{per_tap:.2f} | {wino / im2col:.2f} | {per_tap / im2col:.2f} | {picks} |", flush=True)

if __name__ == "__main__":
    main()
