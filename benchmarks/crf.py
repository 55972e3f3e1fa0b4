"""Our fully connected CRF against pydensecrf on a real photo, timed in the same run.

    python benchmarks/crf.py [--size 500] [--repeat 5]

The photo is matplotlib's grace_hopper.jpg resized to size×size; the
probabilities are a coarse, noisy segmentation of it (k-means colour labels,
averaged over 8×8 blocks, Gaussian noise, softmax), as a network's upsampled
scores look. Prints the median wall and CPU time of each (alternating runs),
their ratio, and how many labels agree.
"""
import argparse
import statistics
import time

import numpy as np
from matplotlib import cbook
from PIL import Image

from minidl.crf import dense_crf, dense_crf_reference


def photo(size):
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR))


def coarse_probabilities(image, classes=4, block=8, seed=0):
    """A blocky, noisy softmax over k-means colour clusters of ``image``."""
    rng = np.random.default_rng(seed)
    pixels = image.reshape(-1, 3).astype(np.float64)
    centres = pixels[rng.choice(len(pixels), classes, replace=False)]
    for _ in range(10):
        labels = ((pixels[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.stack([pixels[labels == k].mean(0) if (labels == k).any() else centres[k] for k in range(classes)])
    h, w = image.shape[:2]
    scores = 4.0 * np.eye(classes)[labels].T.reshape(classes, h, w)
    hb, wb = -(-h // block), -(-w // block)
    padded = np.zeros((classes, hb * block, wb * block))
    padded[:, :h, :w] = scores
    coarse = padded.reshape(classes, hb, block, wb, block).mean((2, 4)) + rng.normal(0, 1, (classes, hb, wb))
    scores = coarse.repeat(block, 1).repeat(block, 2)[:, :h, :w]
    e = np.exp(scores - scores.max(0))
    return (e / e.sum(0)).astype(np.float32), labels.reshape(h, w)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    image = photo(args.size)
    probs, _ = coarse_probabilities(image)
    dense_crf(image[:16, :16], probs[:, :16, :16] / probs[:, :16, :16].sum(0))  # compile the kernels
    times = {"pydensecrf": ([], []), "minidl": ([], [])}
    for _ in range(args.repeat):
        for name, crf in (("pydensecrf", dense_crf_reference), ("minidl", dense_crf)):
            wall, cpu = time.perf_counter(), time.process_time()
            result = crf(image, probs)
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
            if name == "pydensecrf":
                reference = result
    wall = {k: statistics.median(v[0]) for k, v in times.items()}
    cpu = {k: statistics.median(v[1]) for k, v in times.items()}
    agree = (result.argmax(0) == reference.argmax(0)).mean()
    print(f"dense CRF, {args.size}x{args.size}, 4 classes, 10 iterations, median of {args.repeat}")
    print("| | pydensecrf | minidl | minidl / pydensecrf |")
    print("|---|---:|---:|---:|")
    print(f"| wall s | {wall['pydensecrf']:.3f} | {wall['minidl']:.3f} | {wall['minidl'] / wall['pydensecrf']:.2f} |")
    print(f"| CPU s | {cpu['pydensecrf']:.3f} | {cpu['minidl']:.3f} | {cpu['minidl'] / cpu['pydensecrf']:.2f} |")
    print(f"labels agreeing with pydensecrf: {agree:.4%}")


if __name__ == "__main__":
    main()
