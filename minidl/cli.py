"""The ``minidl`` command line: train, evaluate and run DeepLab models, and the main job.

    minidl run                      the main job: train the default DeepLab v3+ on the synthetic data,
                                    evaluate it single-scale, multi-scale + flip and with the CRF
    minidl train --model deeplabv3plus --backbone mobilenetv2_small --data synthetic --iters 1000 --out runs/NAME
    minidl eval runs/NAME/checkpoint.npz --scales 0.5,0.75,1,1.25,1.5 --flip --crf
    minidl predict runs/NAME/checkpoint.npz photo.jpg --crf          a colour overlay PNG
    minidl demo                     a tiny network learns a toy segmentation (the autograd at work)
    minidl export runs/NAME/checkpoint.npz model.pt                 a plain PyTorch state_dict
    minidl import model.pt runs/NAME/checkpoint.npz --model ... --backbone ...   the reverse (torchvision's too)

``python -m reference.train`` takes the arguments of ``minidl train`` and trains the PyTorch twin, on one
process or many (``torchrun``), into the same run folder and checkpoint format.
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np

import minidl
import minidl.nn.functional as F
from minidl import nn, optim

_SYMBOLS = ".o#"  # background, disk, ring in the demo's scene


# ---------------------------------------------------------------- demo
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


# ---------------------------------------------------------------- checkpoints → models
def load_trained(checkpoint, device="cpu", output_stride=None):
    """The model, config and data statistics of a training checkpoint written by ``minidl train``."""
    from minidl import io
    from minidl.train import TrainConfig, build_datasets, build_model

    state = io.load(checkpoint)
    if "config" not in state or "model" not in state:
        raise ValueError(f"{checkpoint} is a minidl file but not a training checkpoint (no model and config)")
    config = TrainConfig(**{**state["config"], "device": device})
    model = build_model(config)
    model.load_state_dict(state["model"])
    if output_stride:
        model.set_output_stride(output_stride)  # v3: train at 16, evaluate at 8, same weights
    _, val_set, stats = build_datasets(config)
    return model.to(device).eval(), config, val_set, stats


def _scale_range(text):
    scales = _scales(text)
    if len(scales) != 2 or scales[0] > scales[1]:
        raise argparse.ArgumentTypeError(f"takes LOW,HIGH with LOW <= HIGH, got {text!r}")
    return scales


def _rates(text):
    try:
        rates = tuple(int(r) for r in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes whole numbers separated by commas, got {text!r}") from None
    if min(rates) < 1:
        raise argparse.ArgumentTypeError(f"takes rates >= 1, got {text!r}")
    return rates


def _scales(text):
    try:
        scales = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes numbers separated by commas, got {text!r}") from None
    if not scales or min(scales) <= 0:
        raise argparse.ArgumentTypeError(f"takes positive numbers, got {text!r}")
    return scales


def _report(name, metrics):
    return f"{name:<28} mIoU {metrics['miou']:.4f}   pixel accuracy {metrics['pixel_accuracy']:.4f}"


# ---------------------------------------------------------------- predict: a photo → a colour overlay
def overlay(image_uint8, labels, alpha=0.5):
    """The image with each pixel tinted by its class colour (VOC's palette)."""
    from minidl.data import colorize

    colours = colorize(labels).astype(np.float32)
    return (image_uint8 * (1 - alpha) + colours * alpha).round().astype(np.uint8)


def predict_image(model, stats, path, scales=(1.0,), flip=False, crf=False, device="cpu"):
    """Labels (H, W) and the uint8 image, for an image file."""
    from PIL import Image

    from minidl.crf import dense_crf
    from minidl.data import eval_transform
    from minidl.inference import multi_scale_predict

    try:
        image = np.asarray(Image.open(path).convert("RGB"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the image {path}: {e}") from None
    chw = image.transpose(2, 0, 1).astype(np.float32) / 255
    normalised, _ = eval_transform(*(s for s in stats if s is not None))(chw, np.zeros(image.shape[:2], np.int64),
                                                                         np.random.default_rng(0))
    batch = minidl.tensor(normalised[None], device=device)
    probs = multi_scale_predict(model, batch, scales=scales, flip=flip).numpy()[0]
    if crf:
        from minidl.train import crf_options_for

        probs = dense_crf(image, probs, **crf_options_for(*image.shape[:2]))
    return probs.argmax(0), image


# ---------------------------------------------------------------- the main job
def prediction_figure(model, val_set, stats, path, count=4, device="cpu"):
    """Image, ground truth, prediction and prediction + CRF for the first ``count`` validation images (or all
    of them, when there are fewer)."""
    from matplotlib.figure import Figure  # not pyplot: no global backend switch inside a notebook

    from minidl.crf import dense_crf
    from minidl.data import colorize, eval_transform
    from minidl.inference import multi_scale_predict
    from minidl.train import _to_uint8, crf_options_for

    transform = eval_transform(*(s for s in stats if s is not None))
    count = min(count, len(val_set))
    fig = Figure(figsize=(10, 2.6 * count))
    axes = fig.subplots(count, 4, squeeze=False)
    for row in range(count):
        image, label = val_set[row]
        normalised, _ = transform(image, label, np.random.default_rng(0))
        probs = multi_scale_predict(model, minidl.tensor(normalised[None], device=device)).numpy()[0]
        refined = dense_crf(_to_uint8(image), probs, **crf_options_for(*label.shape))
        panels = [_to_uint8(image), colorize(label), colorize(probs.argmax(0)), colorize(refined.argmax(0))]
        for ax, panel, title in zip(axes[row], panels, ["image", "ground truth", "prediction", "+ CRF"]):
            ax.imshow(panel)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main_job(iterations, out, device="cpu", backbone="resnet_small", seed=0):
    """Train the default DeepLab v3+ on the synthetic data, then measure what each refinement adds:
    multi-scale + flip inference, then the CRF.

    ``train.cpu_recipe`` with five changes that tuning found (benchmarks/RESULTS.md, sessions 3 and 4): the
    one-block-a-stage ResNet (``resnet_small``) instead of MobileNetV2 ×0.35 — per iteration it is faster here
    and learnt more (0.452 against 0.427 mIoU at 1000 iterations); no random rescaling — the synthetic
    objects already span every scale, and a 97-pixel crop of an image enlarged 2× often hides the outline
    that tells a disk from a square, so the rescaling cost 5 points (0.501 without it); lr 4e-3, which
    beat 2e-3 and 8e-3 over 3000-3500 iterations; batches of 16, which learn as much per image as batches
    of 8 (0.699 against 0.679 for the same 28,000 images) at two thirds of minidl's time per image; 8000
    training images instead of 2000 — with 2000 the model learnt them better than new ones (0.78 against
    0.71 mIoU), and 8000 reached 0.742 against 0.710 in 2000 iterations. Those numbers come from the
    PyTorch twin, ``benchmarks/recipe_twin.py``. The book keeps the recipe as it is.
    """
    from minidl.train import build_datasets, cpu_recipe, evaluate, train

    config = cpu_recipe(iterations=iterations, out=out, device=device, backbone=backbone, seed=seed, lr=4e-3,
                        random_scale=(1, 1), batch_size=16, train_size=8000, eval_every=max(1, iterations // 4),
                        checkpoint_every=max(1, iterations // 4))
    print(f"minidl: training DeepLab v3+ ({backbone}) on the synthetic data for {iterations} iterations -> {out}")
    start = time.perf_counter()
    crf_compiled = _compile_crf_aside()  # the CRF runs on the CPU on either device
    model, _ = train(config)
    trained = time.perf_counter() - start
    crf_compiled.wait()
    model.eval()
    _, val_set, stats = build_datasets(config)
    results = {"training_seconds": round(trained, 1), "iterations": iterations, "backbone": backbone}
    settings = [
        ("single scale", {}),
        ("multi-scale + flip", {"scales": (0.75, 1.0, 1.25), "flip": True}),
        ("multi-scale + flip + CRF", {"scales": (0.75, 1.0, 1.25), "flip": True, "crf": True}),
    ]
    print(f"trained in {trained:.0f} s; validation ({len(val_set)} images):")
    for name, options in settings:
        metrics = evaluate(model, val_set, stats, device=device, **options)
        results[name] = {"miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"],
                         "iou_per_class": [None if np.isnan(v) else float(v) for v in metrics["iou_per_class"]]}
        print("  " + _report(name, metrics))
    prediction_figure(model, val_set, stats, os.path.join(out, "predictions.png"), device=device)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {out}/: checkpoint.npz, metrics.jsonl, curves.png, predictions.png, results.json "
          f"({time.perf_counter() - start:.0f} s in all)")
    return results


def _compile_crf_aside():
    """A second process that compiles the CRF's Numba kernels into the on-disk cache (``minidl.crf.compile_kernels``).

    Numba compiles each kernel on its first call, on one core: the first training step spends about 20 s so on a
    fresh clone while the other core waits. The CRF's kernels compile there meanwhile, instead of after training.
    Whatever goes wrong in that process costs nothing but the time it would have saved.
    """
    return subprocess.Popen([sys.executable, "-c", "from minidl.crf import compile_kernels; compile_kernels()"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- argument parsing
def add_train_arguments(p):
    """The arguments of ``minidl train``, which ``python -m reference.train`` shares."""
    from minidl.train import TrainConfig

    defaults = TrainConfig()
    p.add_argument("--model", default=defaults.model, choices=["deeplabv2", "deeplabv3", "deeplabv3plus"])
    p.add_argument("--backbone", default=defaults.backbone)
    p.add_argument("--output-stride", type=int, default=defaults.output_stride, choices=[8, 16, 32])
    p.add_argument("--head-channels", type=int, default=defaults.head_channels, help="ASPP/decoder width (v3, v3+)")
    p.add_argument("--atrous-rates", type=_rates, default=None,
                   help="ASPP's rates at --output-stride, e.g. 2,4,6 (default: the paper's; one rate for v2 is LargeFOV)")
    p.add_argument("--data", default=defaults.data,
                   help="'synthetic', 'scenes' (its water/road variant: boat and car told apart by the scene), "
                        "'voc:PATH' (a Pascal VOC-format folder) or 'folder:PATH' (images/ and masks/)")
    p.add_argument("--train-split", default=defaults.train_split,
                   help="the training list of VOC or folder data (VOC: train_aug reads SegmentationClassAug/)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="default: 7 for synthetic, 9 for scenes, 21 for VOC; required for folder data")
    p.add_argument("--iters", type=int, default=defaults.iterations)
    p.add_argument("--train-size", type=int, default=defaults.train_size,
                   help="synthetic training images (made once, then reused); ignored for VOC")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--crop-size", type=int, default=defaults.image_size)
    p.add_argument("--random-scale", type=_scale_range, default=defaults.random_scale,
                   help="range of the random rescaling, LOW,HIGH (the papers' 0.5,2; 1,1 for none)")
    p.add_argument("--train-scales", type=_scales, default=defaults.train_scales,
                   help="v2's multi-scale inputs: the network on each scale, max-fused, e.g. 1,0.75,0.5 (default 1)")
    p.add_argument("--optimizer", default=defaults.optimizer, choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--loss-on", default="", choices=["", "upsampled_logits", "downsampled_labels"])
    p.add_argument("--eval-every", type=int, default=defaults.eval_every)
    p.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    p.add_argument("--log-every", type=int, default=defaults.log_every,
                   help="log the losses in groups of this many iterations (each read waits for a GPU)")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue exactly from the run folder's checkpoint")


def config_from_args(args):
    """The ``TrainConfig`` that parsed training arguments (``add_train_arguments``) describe."""
    from minidl.train import TrainConfig

    if args.num_classes is None and args.data.startswith("folder:"):
        raise ValueError("--data folder:PATH needs --num-classes (the number of classes its masks hold)")
    num_classes = args.num_classes or {"synthetic": 7, "scenes": 9}.get(args.data, 21)
    model_options = {} if args.atrous_rates is None else {"atrous_rates": args.atrous_rates}
    return TrainConfig(
        model=args.model, backbone=args.backbone, output_stride=args.output_stride, data=args.data,
        train_split=args.train_split, head_channels=args.head_channels, model_options=model_options,
        num_classes=num_classes, iterations=args.iters, train_size=args.train_size, batch_size=args.batch_size,
        image_size=args.crop_size,
        random_scale=args.random_scale, train_scales=args.train_scales,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, loss_on=args.loss_on,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        out=args.out or os.path.join("runs", args.model), device=args.device, seed=args.seed, workers=args.workers,
    )


def _train(args):
    from minidl.train import train

    config = config_from_args(args)
    _, metrics = train(config, resume=args.resume)
    print(report_run(config.out, metrics))


def report_run(out, metrics):
    """What ``minidl train`` (and the twin) say at the end of a run."""
    evaluated = _report("validation", metrics) if metrics else "validation: no evaluation in the log"
    return f"{evaluated}\ncheckpoint, metrics.jsonl and curves.png in {out}"


def _eval(args):
    from minidl.train import evaluate

    model, config, val_set, stats = load_trained(args.checkpoint, args.device, args.output_stride)
    metrics = evaluate(model, val_set, stats, scales=args.scales, flip=args.flip, crf=args.crf, fusion=args.fusion,
                       device=args.device, progress=True)
    print(_report(f"{config.model} at OS {model.output_stride}", metrics))
    print("IoU per class: " + ", ".join(f"{v:.3f}" for v in metrics["iou_per_class"]))


def _predict(args):
    from PIL import Image

    model, _, _, stats = load_trained(args.checkpoint, args.device, args.output_stride)
    labels, image = predict_image(model, stats, args.image, args.scales, args.flip, args.crf, args.device)
    out = args.out or os.path.splitext(args.image)[0] + "_segmentation.png"
    Image.fromarray(overlay(image, labels)).save(out)
    found = ", ".join(str(c) for c in np.unique(labels))
    print(f"wrote {out} (classes found: {found})")


def _export(args):
    from minidl import io

    state = io.load(args.checkpoint)
    weights = state["model"] if isinstance(state.get("model"), dict) else state
    export_state_dict(weights, args.output)
    print(f"wrote {args.output}: {len(weights)} tensors (torch.load(path, weights_only=True) reads them)")


def export_state_dict(weights, path):
    """Write a state_dict of arrays as PyTorch's ``torch.save`` does, atomically, as torch tensors only."""
    import torch  # only here: nothing else in minidl imports torch

    from minidl import io

    tensors = io.to_torch_state_dict(weights, as_tensor=torch.from_numpy)
    io.write_atomically(os.fspath(path), lambda file: torch.save(tensors, file))


def _import(args):
    import torch  # only here: nothing else in minidl imports torch

    from minidl import io
    from minidl.train import build_model

    try:
        state = torch.load(args.state_dict, map_location="cpu", weights_only=True)
    except Exception as e:  # a missing file, or one torch cannot read without unpickling code
        raise ValueError(f"cannot read {args.state_dict} with torch.load(weights_only=True): {e}") from None
    weights = io.from_torch_state_dict(_unwrapped(state))
    if any(key.startswith("classifier.0.convs.") for key in weights):
        model = _torchvision_model(weights)
        model.load_state_dict(weights)
        io.save(model, args.output)
        print(f"wrote {args.output}: torchvision's {type(model).__name__} weights "
              "(minidl.models.deeplabv3_resnet50/101(...).load_state_dict(minidl.io.load(path)))")
        return
    config = config_from_args(args)
    model = build_model(config)
    model.load_state_dict(weights)
    io.save({"model": model.state_dict(), "config": dataclasses.asdict(config), "iteration": 0}, args.output)
    print(f"wrote {args.output}: {config.model} ({config.backbone}); minidl eval and predict read it")


def _unwrapped(state):
    """The state_dict inside a checkpoint that wraps it as {'model': ...} or {'state_dict': ...}."""
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def _torchvision_model(weights):
    """The minidl twin of the torchvision DeepLabV3 whose weights these are (depth, classes, aux head)."""
    from minidl.models import torchvision_compat

    depth = "resnet101" if "backbone.layer3.22.conv1.weight" in weights else "resnet50"
    factory = getattr(torchvision_compat, f"deeplabv3_{depth}")
    return factory(num_classes=weights["classifier.4.weight"].shape[0],
                   aux_loss=any(key.startswith("aux_classifier.") for key in weights))


def build_parser():
    parser = argparse.ArgumentParser(prog="minidl", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the main job: train DeepLab v3+ on synthetic data and evaluate it")
    # 5200: what the 10 minutes hold since issue 16's thread rules, kept freed memory and loss kernels (532 s in all
    # against 4000 in 534 s before; benchmarks/RESULTS.md, session 8)
    run.add_argument("--iters", type=int, default=int(os.environ.get("MINIDL_RUN_ITERS", 5200)))
    run.add_argument("--out", default="runs/main")
    run.add_argument("--backbone", default="resnet_small")
    run.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    add_train_arguments(commands.add_parser("train", help="train a DeepLab model"))
    export = commands.add_parser("export", help="write a checkpoint's model as a plain PyTorch state_dict (.pt)")
    export.add_argument("checkpoint")
    export.add_argument("output", help="the .pt file to write (torch.load(..., weights_only=True) reads it)")
    imported = commands.add_parser("import", help="a PyTorch state_dict (minidl export's, or torchvision's "
                                                  "DeepLabV3) as a minidl checkpoint; the model is described "
                                                  "by minidl train's arguments")
    imported.add_argument("state_dict", help="a .pt/.pth file of a state_dict (or of {'model': state_dict})")
    imported.add_argument("output", help="the minidl checkpoint to write (.npz)")
    add_train_arguments(imported)

    for name, text in (("eval", "evaluate a checkpoint on its validation data"),
                       ("predict", "segment an image and write a colour overlay PNG")):
        p = commands.add_parser(name, help=text)
        p.add_argument("checkpoint")
        if name == "predict":
            p.add_argument("image")
            p.add_argument("--out", default=None, help="output PNG (default: <image>_segmentation.png)")
        p.add_argument("--scales", type=_scales, default=(1.0,), help="e.g. 0.5,0.75,1,1.25,1.5")
        p.add_argument("--flip", action="store_true", help="add left-right flipped inputs")
        p.add_argument("--crf", action="store_true", help="refine with the fully connected CRF")
        p.add_argument("--fusion", default="mean", choices=["mean", "max"], help="v3: mean of probabilities; v2: max")
        p.add_argument("--output-stride", type=int, default=None, choices=[8, 16, 32],
                       help="evaluate at another output stride (v3: train 16, evaluate 8)")
        p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    demo_parser = commands.add_parser("demo", help="train a small network on a toy segmentation")
    demo_parser.add_argument("--size", type=int, default=24, help="side of the toy picture in pixels")
    demo_parser.add_argument("--iterations", type=int, default=300)
    demo_parser.add_argument("--lr", type=float, default=0.05)
    demo_parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            main_job(args.iters, args.out, args.device, args.backbone)
        elif args.command == "train":
            _train(args)
        elif args.command == "eval":
            _eval(args)
        elif args.command == "predict":
            _predict(args)
        elif args.command == "export":
            _export(args)
        elif args.command == "import":
            _import(args)
        else:
            demo(args.size, args.iterations, args.lr, args.seed)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # errors a user can cause: say them plainly
        print(f"minidl {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
