"""The ``minidl`` command line.

``minidl demo``: a network trained with minidl's own autograd learns to
segment a small picture from pixel coordinates alone, printing its loss as it
falls and the segmentation it ends with.
"""
import argparse
import time

import numpy as np

import minidl
import minidl.nn.functional as F
from minidl import nn, optim

_SYMBOLS = ".o#"  # background, disk, ring


def toy_scene(size):
    """Labels of a size×size picture: background (0), a disk (1) and a ring around another centre (2)."""
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1  # coordinates in [-1, 1]
    labels = np.zeros((size, size), np.int64)
    labels[(xs + 0.35) ** 2 + (ys + 0.3) ** 2 < 0.3**2] = 1
    r = np.hypot(xs - 0.35, ys - 0.3)
    labels[(r > 0.25) & (r < 0.5)] = 2
    coords = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32)
    return coords, labels


def _render(labels):
    return ["".join(_SYMBOLS[v] for v in row) for row in labels]


def demo(size=24, iterations=300, lr=0.05, seed=0):
    minidl.manual_seed(seed)
    coords, labels = toy_scene(size)
    x, target = minidl.tensor(coords), minidl.tensor(labels.reshape(-1))
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    optimizer = optim.Adam(model.parameters(), lr=lr)
    print(f"minidl demo: a 2-64-64-3 network learns to segment a {size}x{size} scene from pixel coordinates")
    start = time.perf_counter()
    for it in range(1, iterations + 1):
        loss = F.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it == 1 or it % (iterations // 10) == 0:
            print(f"  iteration {it:4d}   loss {loss.item():.4f}")
    with minidl.no_grad():
        predicted = model(x).argmax(1).numpy().reshape(size, size)
    accuracy = (predicted == labels).mean()
    print(f"pixel accuracy {accuracy:.3f} after {iterations} iterations ({time.perf_counter() - start:.1f} s)")
    print(f"{'ground truth':<{size}}   prediction      ({_SYMBOLS[0]} background, {_SYMBOLS[1]} disk, {_SYMBOLS[2]} ring)")
    for truth_row, predicted_row in zip(_render(labels), _render(predicted)):
        print(f"{truth_row}   {predicted_row}")
    return loss.item(), accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minidl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="train a small network on a toy segmentation and watch the loss fall")
    run_demo.add_argument("--size", type=int, default=24, help="side of the toy picture in pixels")
    run_demo.add_argument("--iterations", type=int, default=300)
    run_demo.add_argument("--lr", type=float, default=0.05)
    run_demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.size, args.iterations, args.lr, args.seed)


if __name__ == "__main__":
    main()
