"""The book's experiments: each DeepLab idea as a single-variable ablation, trained alike for several seeds.

Every run trains on the scenes data (``SyntheticSegmentation(scenes=True)``, 129×129: objects from a few
pixels to most of the image, thin parts, and boat/car told apart only by the scene) with one recipe, so a
comparison changes one thing. Chapters 4, 7, 9 and 11 read their numbers from here; this file also trains
them from the command line (``train_or_load``: a finished run with the same settings is loaded, not
retrained)::

    python book/experiments.py                      # every run, seeds 0 1 2 (hours on a 2-core CPU)
    python book/experiments.py --jobs 2             # two runs at a time, one thread each: faster on 2 cores
    python book/experiments.py --only v3 v3plus --seeds 0
    python book/experiments.py --device cuda        # the same runs on a GPU
    python book/experiments.py --report             # the table of every ablation from the finished runs

**The papers' geometry on smaller images.** The papers' rates were chosen for Pascal VOC images of
about 500 pixels, seen as 513×513 (33×33 features at output stride 16). On a 129-pixel image the same rates
would reach past the feature map: at OS 16 the map is 9×9, and v3's rates 12 and 18 would leave only the
centre tap on a real pixel, a 1×1 convolution. So each rate is scaled by the ratio of the maps, 9/33 at
OS 16 (v3's 6, 12, 18 become 2, 3, 5) and 17/65 at OS 8 (v2's 6, 12, 18, 24 become 2, 3, 5, 6; LargeFOV's
12 becomes 3): each branch covers about the same fraction of the image as in the paper. The image size is
the CPU's budget: the 33 runs (11 runs, 3 seeds) of 1000 iterations at 129 pixels took about 70 minutes with
``--jobs 2`` on a 2-core machine that was doing other work as well (2026-12-04); with a GPU,
``IMAGE_SIZE = 513`` gives the papers' own rates.
"""
import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import minidl
from minidl.models.aspp import ASPP_RATES, ASPP_V2_RATES, scaled_rates
from minidl.train import TrainConfig, build_datasets, crf_options_for, evaluate, read_log, train_or_load

FAST = os.environ.get("MINIDL_BOOK_FAST") == "1"
RUNS = Path(os.environ.get("MINIDL_BOOK_RUNS")
            or Path(minidl.__file__).resolve().parents[1] / "runs" / ("book-fast" if FAST else "book"))
SEEDS = (0, 1, 2)
PAPER_IMAGE = 513  # the papers' evaluation size for Pascal VOC, the images their rates were chosen for
LARGEFOV_RATE = 12  # v2's single-branch head (Sec. 3.3)
V2_MSC_SCALES = (1.0, 0.75, 0.5)  # v2's multi-scale inputs, max-fused (Sec. 3.3)
V3_EVAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # v3's multi-scale inference (Sec. 4.3)

# One recipe for every run: the main job's (``minidl run``: Adam at 4e-3, no weight decay, the small ResNet)
# at 129 pixels, with layer4 of three units so that v3's multi-grid has something to act on.
IMAGE_SIZE = 65 if FAST else 129
RECIPE = dict(data="scenes", num_classes=9, image_size=IMAGE_SIZE, train_size=64 if FAST else 4000,
              val_size=12 if FAST else 200, backbone="resnet_small", head_channels=16 if FAST else 64, batch_size=8,
              iterations=10 if FAST else 1000, optimizer="adam", lr=4e-3, weight_decay=0.0, random_scale=(1.0, 1.0),
              eval_every=10 ** 9, checkpoint_every=250, progress=False)
BACKBONE_OPTIONS = {"layers": (1, 1, 1, 3)}


def book_rates(paper_rates, output_stride, image_size=IMAGE_SIZE):
    """The papers' rates scaled from a 513-pixel image's feature map to this image's, at ``output_stride``."""
    ratio = math.ceil(image_size / output_stride) / math.ceil(PAPER_IMAGE / output_stride)
    return tuple(max(1, int(rate * ratio + 0.5)) for rate in paper_rates)


def _v2(**changes):
    options = {**BACKBONE_OPTIONS, "atrous_rates": book_rates(ASPP_V2_RATES, 8), **changes.pop("options", {})}
    return dict(model="deeplabv2", model_options=options, **{"output_stride": 8, **changes})


def _v3(model="deeplabv3", **changes):
    options = {**BACKBONE_OPTIONS, "atrous_rates": book_rates(ASPP_RATES, 16), **changes.pop("options", {})}
    return dict(model=model, output_stride=16, model_options=options, **changes)


# name -> what the run changes from the recipe
RUNS_SETTINGS = {
    "v2": _v2(),
    "v2_largefov": _v2(options={"atrous_rates": book_rates((LARGEFOV_RATE,), 8)}),
    "v2_msc": _v2(train_scales=V2_MSC_SCALES),
    "v2_os32": _v2(output_stride=32, options={"atrous_rates": scaled_rates(book_rates(ASPP_V2_RATES, 8), 8, 32)}),
    "v3": _v3(),
    "v3_downsampled_labels": _v3(loss_on="downsampled_labels"),
    "v3_no_multigrid": _v3(options={"multi_grid": (1, 1, 1)}),
    "v3_no_pooling": _v3(options={"image_pooling": False}),
    "v3_random_scale": _v3(random_scale=(0.5, 2.0)),
    "v3_separable": _v3(options={"separable": True}),
    "v3plus": _v3("deeplabv3plus"),
}


def config(name, seed=0, device="cpu"):
    """The ``TrainConfig`` of run ``name`` with ``seed``; it lives in ``RUNS/seed<k>/name``."""
    return TrainConfig(**{**RECIPE, **RUNS_SETTINGS[name]}, seed=seed, device=device,
                       out=str(RUNS / f"seed{seed}" / name))


# ---------------------------------------------------------------- evaluation settings
# name -> (how the model is changed, evaluate's options); every one on the same validation images
def _at_output_stride_8(model):
    return model.set_output_stride(8)


EVALUATIONS = {
    "single scale": (None, {}),
    "OS 8": (_at_output_stride_8, {}),
    "OS 8 + MS + flip": (_at_output_stride_8, {"scales": V3_EVAL_SCALES, "flip": True}),
    "MSC (max)": (None, {"scales": V2_MSC_SCALES, "fusion": "max"}),
    "CRF": (None, {"crf": True}),
}


def evaluation(name, setting, seed, device="cpu"):
    """mIoU of run ``name`` (seed ``seed``) under evaluation ``setting``, cached in the run's folder."""
    run = config(name, seed, device)
    cache = Path(run.out) / "evaluations.json"
    done = json.loads(cache.read_text()) if cache.exists() else {}
    if setting not in done:
        model, metrics = train_or_load(run)
        done["single scale"] = metrics["miou"]  # train_or_load's own evaluation: no need to repeat it
        if setting != "single scale":
            change, options = EVALUATIONS[setting]
            model = (change(model) if change else model).eval()
            _, val_set, stats = build_datasets(run)
            if options.get("crf"):
                options = {**options, "crf_options": crf_options_for(run.image_size, run.image_size)}
            done[setting] = evaluate(model, val_set, stats, device=device, **options)["miou"]
        cache.write_text(json.dumps(done, indent=1))
    return done[setting]


# ---------------------------------------------------------------- the ablations
@dataclasses.dataclass(frozen=True)
class Ablation:
    """One row of the papers' tables: ``baseline`` against ``variant``, each a (run, evaluation setting)."""

    idea: str
    baseline: tuple
    variant: tuple
    paper: str  # where the paper's numbers come from
    paper_miou: tuple  # (baseline, variant), Pascal VOC 2012 val mIoU %; None where the paper has no row
    note: str = ""


ABLATIONS = (
    Ablation("atrous convolution: output stride 8 instead of 32", ("v2_os32", "single scale"),
             ("v2", "single scale"), "v3 Table 1 (ResNet-50, cascaded blocks)", (70.06, 75.18),
             "the same field of view: at OS 32 the strides stay and ASPP-L's rates shrink by 4"),
    Ablation("ASPP-L instead of LargeFOV", ("v2_largefov", "single scale"), ("v2", "single scale"),
             "v2 Table 3 (VGG-16, before CRF)", (65.76, 68.96)),
    Ablation("multi-scale inputs (MSC), trained and tested", ("v2", "single scale"), ("v2_msc", "MSC (max)"),
             "v2 Table 4 (ResNet-101)", (68.72, 71.27)),
    Ablation("fully connected CRF", ("v2", "single scale"), ("v2", "CRF"), "v2 Table 3 (ASPP-L, VGG-16)",
             (68.96, 71.57)),
    Ablation("loss on upsampled logits, not downsampled labels", ("v3_downsampled_labels", "single scale"),
             ("v3", "single scale"), "v3 Table 8", (76.01, 77.21)),
    Ablation("multi-grid (1, 2, 4) instead of (1, 1, 1)", ("v3_no_multigrid", "single scale"),
             ("v3", "single scale"), "v3 Table 5 (without image pooling)", (75.36, 76.58),
             "the paper's pair has no image pooling; ours has it"),
    Ablation("image pooling", ("v3_no_pooling", "single scale"), ("v3", "single scale"), "v3 Table 5",
             (76.58, 77.21)),
    Ablation("random rescaling 0.5-2 in training", ("v3", "single scale"), ("v3_random_scale", "single scale"),
             "v2 Table 4 (Aug, ResNet-101 with MSC and COCO)", (73.28, 74.87)),
    Ablation("OS 8 instead of 16 at evaluation", ("v3", "single scale"), ("v3", "OS 8"), "v3 Table 6",
             (77.21, 78.51)),
    Ablation("multi-scale + flip inference (at OS 8)", ("v3", "OS 8"), ("v3", "OS 8 + MS + flip"), "v3 Table 6",
             (78.51, 79.77), "the paper's model was trained with random rescaling; ours at one scale"),
    Ablation("multi-scale + flip inference, trained with random rescaling", ("v3_random_scale", "OS 8"),
             ("v3_random_scale", "OS 8 + MS + flip"), "v3 Table 6", (78.51, 79.77),
             "as the paper: the model was trained on images rescaled by 0.5-2"),
    Ablation("separable ASPP instead of dense", ("v3", "single scale"), ("v3_separable", "single scale"),
             "v3+ Table 5 (Xception, with decoder)", (79.93, 79.79),
             "the paper's pair has the decoder; ours has none"),
    Ablation("decoder", ("v3_separable", "single scale"), ("v3plus", "single scale"),
             "v3+ Table 3 (ResNet-101, eval OS 16)", (77.21, 78.85)),
)

VERSIONS = (("v2", "v2"), ("v3", "v3"), ("v3+", "v3plus"))  # chapter 11's rows: name, run


def runs_needed(ablations=ABLATIONS):
    """Every run the ablations read, in first-use order."""
    names = [run for a in ablations for run, _ in (a.baseline, a.variant)] + [run for _, run in VERSIONS]
    return list(dict.fromkeys(names))


def summarise(values):
    """(mean, sample standard deviation) of per-seed values; the deviation is 0 for one seed."""
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def compare(ablation, seeds=SEEDS, device="cpu"):
    """The ablation's numbers over ``seeds``: per-seed mIoUs, means ± std, and whether the change is an effect.

    A difference counts as an effect only when it exceeds the spread: the larger of the two standard
    deviations over seeds.
    """
    baseline = [evaluation(*ablation.baseline, seed, device) for seed in seeds]
    variant = [evaluation(*ablation.variant, seed, device) for seed in seeds]
    (b_mean, b_std), (v_mean, v_std) = summarise(baseline), summarise(variant)
    spread = max(b_std, v_std)
    return {"baseline": baseline, "variant": variant, "baseline_mean": b_mean, "baseline_std": b_std,
            "variant_mean": v_mean, "variant_std": v_std, "difference": v_mean - b_mean,
            "effect": len(seeds) > 1 and abs(v_mean - b_mean) > spread}


def verdict(result):
    if not result["effect"]:
        return "within the spread"
    return "helps" if result["difference"] > 0 else "hurts"


PAPER_NOISE = 0.5  # mIoU points: a paper's single-run difference smaller than this counts as "no change"


def paper_verdict(ablation):
    """What the paper's own row says: "helps", "hurts", or "no change" (a difference under PAPER_NOISE)."""
    baseline, variant = ablation.paper_miou
    if abs(variant - baseline) < PAPER_NOISE:
        return "no change"
    return "helps" if variant > baseline else "hurts"


def agrees(result, ablation):
    """Whether our verdict is the paper's (our "within the spread" matches the paper's "no change")."""
    return {"within the spread": "no change"}.get(verdict(result), verdict(result)) == paper_verdict(ablation)


def ablation_rows(seeds=SEEDS, device="cpu", ablations=ABLATIONS):
    """One Markdown-ready row per ablation: ours (mean ± std over seeds, in mIoU %) beside the paper's."""
    rows = []
    for ablation in ablations:
        r = compare(ablation, seeds, device)
        paper_b, paper_v = ablation.paper_miou
        rows.append((ablation.idea, f"{100 * r['baseline_mean']:.1f} ± {100 * r['baseline_std']:.1f}",
                     f"{100 * r['variant_mean']:.1f} ± {100 * r['variant_std']:.1f}",
                     f"{100 * r['difference']:+.1f}", verdict(r), f"{paper_b:.2f} → {paper_v:.2f} "
                     f"({paper_v - paper_b:+.2f})", "yes" if agrees(r, ablation) else "**no**",
                     ablation.paper + (f"; {ablation.note}" if ablation.note else "")))
    return rows


LOSS_WINDOW = 100  # iterations at the end of a run whose training losses are averaged


def final_training_loss(name, seed):
    """Mean training loss of run ``name`` over its last LOSS_WINDOW iterations, from its log."""
    losses = [r["loss"] for r in read_log(config(name, seed).out) if "loss" in r]
    return float(np.mean(losses[-LOSS_WINDOW:]))


def same_loss(a, b):
    """Whether two runs' training losses measure the same thing: the same targets and the same terms."""
    return all(getattr(a, field) == getattr(b, field) for field in ("loss_on", "output_stride", "train_scales"))


def loss_rows(seeds=SEEDS, ablations=ABLATIONS):
    """Per training ablation whose two runs' losses compare: the final training loss, mean ± std over seeds.

    A change that lowers validation mIoU while it raises the training loss has not been learnt within the budget;
    one that lowers the training loss as well as the validation mIoU fits the training images at the others' cost.
    """
    rows = []
    for ablation in ablations:
        (run_a, _), (run_b, _) = ablation.baseline, ablation.variant
        if run_a == run_b or not same_loss(config(run_a), config(run_b)):
            continue
        a, b = (summarise([final_training_loss(run, seed) for seed in seeds]) for run in (run_a, run_b))
        rows.append((ablation.idea, f"{a[0]:.3f} ± {a[1]:.3f}", f"{b[0]:.3f} ± {b[1]:.3f}", f"{b[0] - a[0]:+.3f}"))
    return rows


LOSS_HEADER = ("idea", f"training loss without (last {LOSS_WINDOW} iterations)", "with", "change")


def trained_on(names=None, seeds=SEEDS):
    """Which device trained the runs, read from each run's config.json (the committed outputs must say so)."""
    names = names or runs_needed()
    devices = {}
    for seed in seeds:
        for name in names:
            saved = Path(config(name, seed).out) / "config.json"
            device = json.loads(saved.read_text())["device"] if saved.exists() else "not trained yet"
            devices.setdefault(device, []).append(f"{name}/seed{seed}")
    return "Trained on " + "; ".join(f"**{device}**: {len(runs)} run{'s' * (len(runs) > 1)}"
                                     for device, runs in devices.items()) + f" (seeds {', '.join(map(str, seeds))})."


ABLATION_HEADER = ("idea", "without (ours)", "with (ours)", "change", "our verdict", "paper", "as in the paper?",
                   "paper's source")


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def train_all(names, seeds, device="cpu", claims=None):
    """Train (or load) every run of ``names`` for each seed, seed by seed, so that every comparison has one seed
    early and then gains the others. With ``claims`` (a folder shared by several processes) each process takes
    the runs no other has claimed: a run is claimed by creating its file there, which only one process can."""
    for seed in seeds:
        for name in names:
            if claims is not None:
                try:
                    (Path(claims) / f"seed{seed}-{name}").open("x").close()
                except FileExistsError:
                    continue
            _, metrics = train_or_load(config(name, seed, device))
            print(f"{name} seed {seed}: validation mIoU {metrics['miou']:.3f}", flush=True)


ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_in_parallel(jobs, argv):
    """Run ``jobs`` copies of this script side by side, each on one thread and sharing a claims folder.

    On a small CPU this trains more runs per hour than one process on every core: the book's small
    convolutions keep one thread busy, and two threads on one of them mostly wait for each other.
    """
    with tempfile.TemporaryDirectory() as claims:
        command = [sys.executable, __file__, *argv, "--jobs", "1", "--claims", claims]
        workers = [subprocess.Popen(command, env={**os.environ, **ONE_THREAD}) for _ in range(jobs)]
        return max(worker.wait() for worker in workers)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, choices=list(RUNS_SETTINGS), help="these runs only")
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report", action="store_true", help="print the ablation table (training what is missing)")
    parser.add_argument("--jobs", type=int, default=1, help="train this many runs at once, each on one CPU thread")
    parser.add_argument("--claims", help=argparse.SUPPRESS)  # the folder a --jobs worker shares with the others
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.report:
        print(markdown(ABLATION_HEADER, ablation_rows(args.seeds, args.device)))
        return 0
    if args.jobs > 1:
        return train_in_parallel(args.jobs, argv)
    train_all(args.only or runs_needed(), args.seeds, args.device, args.claims)
    return 0


if __name__ == "__main__":
    sys.exit(main())
