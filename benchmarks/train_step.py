"""One training step of a DeepLab v3+, minidl against its PyTorch twin with the same weights, each in its own process.

    python benchmarks/train_step.py --device cuda                 # both models, both frameworks
    python benchmarks/train_step.py --device cuda --kernels off   # minidl with its CUDA kernels switched off
    python benchmarks/train_step.py --device cpu --models main --steps 5

Each side runs in a process of its own (benchmarks/isolate.py), one after the other, from the same weights.

Models: ``main`` is the main job's v3+ (resnet_small, 64-channel head, 7 classes) at 16 × 97²;
``mobilenet`` is v3+ MobileNetV2 (256-channel head, 21 classes) at 8 × 321². A step is forward, the
cross-entropy on upsampled logits, backward and Adam's update, in float32. The table gives the median
milliseconds per step after warm-up (each step bracketed by a device synchronisation), the ratio minidl /
PyTorch, and on a GPU the peak memory of one more step, two ways each side:

- in use: the most bytes that arrays (PyTorch: tensors) held at once, weights, optimizer state and batch
  included: the high-water mark of CuPy's memory pool's ``used_bytes()``, read after every allocation,
  against ``torch.cuda.max_memory_allocated()``;
- held: the most bytes the allocator held from the GPU, blocks cached for reuse included: CuPy's pool's
  ``total_bytes()``, read the same way, against ``torch.cuda.max_memory_reserved()``.

Both peaks are reset at the start of that step (``torch.cuda.reset_peak_memory_stats()``), so they are the
step's, not the warm-up's. Memory that neither allocator hands out (cuBLAS's and cuDNN's own workspaces, the
CUDA context) is in neither. Nothing here asserts a speed: record the table, with its command, in
benchmarks/RESULTS.md.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.isolate import SideFailed, report, run_side  # noqa: E402

MODELS = {
    "main": dict(backbone="resnet_small", head_channels=64, num_classes=7, batch=16, size=97),
    "mobilenet": dict(backbone="mobilenetv2", head_channels=256, num_classes=21, batch=8, size=321),
}


def batch(spec):
    """The images and labels of a step: ``spec["batch"]`` of ``spec["size"]``², the same in every process."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((spec["batch"], 3, spec["size"], spec["size"])).astype(np.float32)
    labels = rng.integers(0, spec["num_classes"], (spec["batch"], spec["size"], spec["size"]))
    return images, labels


def twin(spec):
    """The PyTorch twin of minidl's v3+ that ``spec`` describes."""
    import reference.models.deeplab as twins

    return twins.deeplabv3plus(backbone=spec["backbone"], num_classes=spec["num_classes"],
                               head_channels=spec["head_channels"])


def save_twin_weights(spec, folder):
    """The twin's initial weights (torch's seed 0) as ``folder``/weights.npz, which both sides load: the same
    weights in both processes. Returns the path."""
    import torch

    torch.manual_seed(0)
    path = os.path.join(folder, "weights.npz")
    np.savez(path, **{k: v.numpy() for k, v in twin(spec).state_dict().items()})
    return path


def _time_steps(step, synchronize, steps):
    step()  # warm-up: compilation, allocation, lazy initialisation
    step()
    times = []
    for _ in range(steps):
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def run_torch(spec, weights, device, steps):
    import torch
    import torch.nn.functional as F

    model = twin(spec).to(device)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(weights).items()})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = (torch.from_numpy(a).to(device) for a in batch(spec))

    def step():
        loss = F.cross_entropy(model(images), labels, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ms = _time_steps(step, synchronize, steps)
    if device != "cuda":
        return {"ms": ms}
    torch.cuda.reset_peak_memory_stats()
    step()
    synchronize()
    return {"ms": ms, "in_use": torch.cuda.max_memory_allocated(), "held": torch.cuda.max_memory_reserved()}


def run_minidl(spec, weights, device, steps):
    import minidl
    from minidl import backend, optim
    from minidl.models import deeplabv3plus
    from minidl.train import segmentation_loss

    model = deeplabv3plus(backbone=spec["backbone"], num_classes=spec["num_classes"],
                          head_channels=spec["head_channels"])
    model.load_state_dict(dict(np.load(weights).items()))
    model.to(device).train()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    images, labels = (minidl.tensor(a, device=device) for a in batch(spec))

    def step():
        loss = segmentation_loss(model, images, labels, "upsampled_logits")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    synchronize = backend.cupy().cuda.Device().synchronize if device == "cuda" else (lambda: None)
    ms = _time_steps(step, synchronize, steps)
    if device != "cuda":
        return {"ms": ms}
    return {"ms": ms, **_cupy_peaks(backend.cupy(), step)}


def _cupy_peaks(cp, step):
    """Peak bytes in use and held by CuPy's default memory pool during ``step()``. Both peak right after an
    allocation, so an allocator that reads them after each one finds the exact high-water marks."""
    pool = cp.get_default_memory_pool()
    peaks = {"in_use": pool.used_bytes(), "held": pool.total_bytes()}

    def allocate(size):
        memory = pool.malloc(size)
        peaks["in_use"] = max(peaks["in_use"], pool.used_bytes())
        peaks["held"] = max(peaks["held"], pool.total_bytes())
        return memory

    cp.cuda.set_allocator(allocate)
    try:
        step()
        cp.cuda.Device().synchronize()
    finally:
        cp.cuda.set_allocator(pool.malloc)
    return peaks


def _side(args):
    """One framework, one model, in this process: print its result as JSON."""
    run = run_torch if args.side == "torch" else run_minidl
    report(run(MODELS[args.models], args.weights, args.device, args.steps))


def _in_own_process(side, model, weights, args):
    arguments = ["--models", model, "--weights", weights, "--device", args.device, "--steps", str(args.steps)]
    env = {**os.environ, "MINIDL_KERNELS": "cpu" if args.kernels == "off" else "on"}
    try:
        return run_side(os.path.abspath(__file__), side, arguments, env)
    except SideFailed as failure:
        return {"error": str(failure)}


def _megabytes(n):
    return "–" if n is None else f"{n / 2**20:.0f}"


def _ratio(ours, theirs):
    return "–" if ours is None or theirs is None else f"{ours / theirs:.2f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--models", default="main,mobilenet", help="comma-separated: " + ", ".join(MODELS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--kernels", default="on", choices=["on", "off"], help="minidl's CUDA kernels (MINIDL_KERNELS)")
    p.add_argument("--side", choices=["minidl", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        return _side(args)
    import torch

    print(f"# train step, device {args.device}, float32, Adam, median of {args.steps} steps after 2 warm-up, "
          f"minidl kernels {args.kernels}, torch {torch.__version__}")
    print("# peak MB of one step: 'in use' = arrays/tensors alive at once (CuPy pool used_bytes high-water "
          "mark / torch max_memory_allocated); 'held' = taken from the GPU by the allocator, cache included "
          "(CuPy pool total_bytes / torch max_memory_reserved)")
    print("| model, batch | minidl ms | PyTorch ms | minidl / PyTorch | minidl MB in use | PyTorch MB in use "
          "| in use, minidl / PyTorch | minidl MB held | PyTorch MB held |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        spec = MODELS[name]
        with tempfile.TemporaryDirectory() as folder:
            weights = save_twin_weights(spec, folder)
            ours, theirs = (_in_own_process(side, name, weights, args) for side in ("minidl", "torch"))
        label = f"{name} ({spec['backbone']}, {spec['head_channels']}-ch head), {spec['batch']} × {spec['size']}²"
        if "error" in ours or "error" in theirs:
            print(f"| {label} | {ours.get('error', '')} | {theirs.get('error', '')} | | | | | | |")
            continue
        print(f"| {label} | {ours['ms']:.1f} | {theirs['ms']:.1f} | {ours['ms'] / theirs['ms']:.2f} | "
              f"{_megabytes(ours.get('in_use'))} | {_megabytes(theirs.get('in_use'))} | "
              f"{_ratio(ours.get('in_use'), theirs.get('in_use'))} | "
              f"{_megabytes(ours.get('held'))} | {_megabytes(theirs.get('held'))} |")


if __name__ == "__main__":
    main()
