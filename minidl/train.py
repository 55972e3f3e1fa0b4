"""Training and evaluating a DeepLab, as the papers do it, on the CPU or on a GPU with the same code.

The loop: poly learning rate lr·(1 − it/max_it)^0.9, SGD with momentum (or
Adam), a cross-entropy that ignores label 255, taken either on labels
downsampled to the score map (DeepLab v2) or on scores upsampled to the labels
(v3 and v3+, which found that downsampling the labels loses fine detail).
Every ``checkpoint_every`` iterations the whole state — model, optimiser,
schedule, random generator, iteration — is written atomically, so
``resume=True`` continues exactly where the run stopped: the data loader's
batches are a pure function of (seed, iteration), so it sees the very batches
the uninterrupted run would have seen.
"""
import dataclasses
import json
import math
import os
import time

import numpy as np
from tqdm import tqdm

import minidl
import minidl.nn.functional as F
from minidl import backend, io, models, optim
from minidl.backend import get_array_module
from minidl.crf import dense_crf
from minidl.data import (DataLoader, FolderSegmentation, SyntheticSegmentation, VOCSegmentation, eval_transform,
                         train_transform)
from minidl.inference import multi_scale_predict
from minidl.metrics import SegmentationMetrics

LOSS_MODES = ("upsampled_logits", "downsampled_labels")
IGNORE_INDEX = 255


@dataclasses.dataclass
class TrainConfig:
    model: str = "deeplabv3plus"  # deeplabv2 | deeplabv3 | deeplabv3plus
    backbone: str = "mobilenetv2_small"
    output_stride: int = 16
    head_channels: int = 256  # ASPP and decoder width (v3/v3+); the papers' 256, smaller for CPU runs
    model_options: dict = dataclasses.field(default_factory=dict)  # more keywords for the model's factory
    data: str = "synthetic"  # 'synthetic', 'scenes' (its water/road variant), 'voc:PATH' or 'folder:PATH'
    # (see build_datasets)
    train_split: str = "train"  # the training list of VOC or folder data ('train_aug': VOC + SBD, as the papers)
    num_classes: int = 7  # the synthetic set's 7; 9 for 'scenes'; 21 for Pascal VOC
    train_size: int = 2000  # synthetic items in the training split
    val_size: int = 100
    image_size: int = 97  # synthetic images, and the training crop
    random_scale: tuple = (0.5, 2.0)  # the papers' range of random rescaling; (1, 1) trains at the images' own scale
    train_scales: tuple = (1.0,)  # v2's multi-scale inputs (MSC) when several, e.g. (1, 0.75, 0.5)
    batch_size: int = 8
    iterations: int = 1000
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    loss_on: str = ""  # '' picks the model's paper: downsampled_labels for v2, upsampled_logits otherwise
    eval_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 10  # losses are read back (a wait for a GPU) and logged in groups of this many iterations
    out: str = "runs/deeplabv3plus"
    device: str = "cpu"
    seed: int = 0
    workers: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {tuple(MODELS)}, got {self.model!r}")
        if self.loss_on and self.loss_on not in LOSS_MODES:
            raise ValueError(f"loss_on must be one of {LOSS_MODES}, got {self.loss_on!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not (self.data in ("synthetic", "scenes") or self.data.startswith(("voc:", "folder:"))):
            raise ValueError(f"data must be 'synthetic', 'scenes', 'voc:PATH' or 'folder:PATH', got {self.data!r}")
        self.random_scale = tuple(float(s) for s in self.random_scale)  # a list, when read back from JSON
        self.train_scales = tuple(float(s) for s in self.train_scales)
        if not self.train_scales or min(self.train_scales) <= 0:
            raise ValueError(f"train_scales must be one or more positive scales, got {self.train_scales}")
        if len(self.random_scale) != 2 or not 0 < self.random_scale[0] <= self.random_scale[1]:
            raise ValueError(f"random_scale must be (low, high) with 0 < low <= high, got {self.random_scale}")
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError(f"iterations and batch_size must be positive, got {self.iterations}, {self.batch_size}")
        if min(self.eval_every, self.checkpoint_every, self.log_every) < 1:
            raise ValueError(f"eval_every, checkpoint_every and log_every must be positive, got "
                             f"{self.eval_every}, {self.checkpoint_every}, {self.log_every}")
        if not self.loss_on:
            self.loss_on = "downsampled_labels" if self.model == "deeplabv2" else "upsampled_logits"


MODELS = {"deeplabv2": models.deeplabv2, "deeplabv3": models.deeplabv3, "deeplabv3plus": models.deeplabv3plus}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


def cpu_recipe(model="deeplabv3plus", **changes):
    """The settings that train a small DeepLab on the synthetic data in minutes on a CPU.

    A MobileNetV2 ×0.35 backbone, a 64-channel head instead of the papers' 256,
    batches of 8 crops of 97×97, and Adam (lr 2e-3, no weight decay) instead
    of the papers' SGD: from scratch and this short, Adam reached a validation
    mIoU of 0.33 after 400 iterations where SGD (lr 0.02, momentum 0.9) reached
    0.22. The book's chapters train with it; the main job (``minidl run``) changes
    the backbone, the random rescaling, the lr, the batch size and the number of
    training images, as later tuning found better (see ``cli.main_job``). ``changes`` override any field (``iterations``,
    ``out``, ``model_options``…).
    """
    settings = dict(model=model, backbone="mobilenetv2_small", head_channels=64, batch_size=8, image_size=97,
                    optimizer="adam", lr=2e-3, weight_decay=0.0)
    return TrainConfig(**{**settings, **changes})


# ---------------------------------------------------------------- building blocks
def model_arguments(config):
    """The keywords of ``config.model``'s factory (minidl's, and the PyTorch twin's in ``reference.models``)."""
    options = {} if config.model == "deeplabv2" else {"head_channels": config.head_channels}
    return dict(backbone=config.backbone, num_classes=config.num_classes, output_stride=config.output_stride,
                **options, **config.model_options)


def build_model(config):
    return MODELS[config.model](**model_arguments(config))


def build_datasets(config):
    """The training and validation sets named by ``config.data``, checked before training starts."""
    if config.data in ("synthetic", "scenes"):
        # cached: a training run draws each item many times (2000 items are about 240 MB at 97×97)
        train, val = (SyntheticSegmentation(size, config.image_size, config.num_classes, config.seed, split, cache=True,
                                            scenes=config.data == "scenes")
                      for size, split in ((config.train_size, "train"), (config.val_size, "val")))
        return train, val, (train.MEAN, train.STD)
    kind, root = config.data.split(":", 1)
    folder = VOCSegmentation if kind == "voc" else FolderSegmentation
    train = folder(root, config.train_split, num_classes=config.num_classes)
    val = folder(root, "val", num_classes=config.num_classes)
    return train, val, (None, None)  # photos are normalised with ImageNet's statistics


def build_loader(config, dataset, stats):
    mean, std = stats
    scale = None if config.random_scale == (1.0, 1.0) else config.random_scale
    transform = train_transform(config.image_size, *(s for s in (mean, std) if s is not None), scale=scale)
    # No worker thread unless asked for (--workers), on 'cuda' too: there the loader already copies the next
    # batch while the GPU steps on this one, and the host side of a step is Python issuing launches, which
    # holds the GIL, as do the many small NumPy calls of the augmentation. A thread did not overlap them: a
    # 19 ms pure-Python stand-in for a step plus a 7 ms batch (16 × 97², cached items) took 25.7-26.6 ms a
    # step with no worker thread and 26.4-27.0 ms with one (2-core CPU, two runs each). Items that take longer to make (photos read from
    # disk, which releases the GIL) are where --workers pays.
    return DataLoader(dataset, config.batch_size, shuffle=True, drop_last=True, seed=config.seed,
                      num_workers=config.workers, transform=transform, device=config.device)


def segmentation_loss(model, images, labels, loss_on, scales=(1.0,)):
    """Cross-entropy ignoring label 255, where the paper takes it (see the module docstring).

    Several ``scales`` train as v2's multi-scale inputs (MSC, Sec. 3.3): the shared network scores the batch
    rescaled to each; each scale's scores and their element-wise max (at the first scale's size) take the
    loss, and the losses add up.
    """
    if tuple(scales) == (1.0,):
        return _loss(_scores(model, images, loss_on), labels)
    per_scale = [_scores(model, _rescaled(images, scale), loss_on) for scale in scales]
    size = tuple(per_scale[0].shape[2:])
    fused = per_scale[0]
    for scores in per_scale[1:]:
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        fused = minidl.where(scores > fused, scores, fused)
    total = _loss(fused, labels)
    for scores in per_scale:
        total = total + _loss(scores, labels)
    return total


def _scores(model, images, loss_on):
    # the logits at the images' size, or v2's score map at the output stride before the final upsampling
    return model(images) if loss_on == "upsampled_logits" else model.head(model.backbone(images))


def _rescaled(images, scale):
    if scale == 1:
        return images
    size = tuple(max(1, int(side * scale + 0.5)) for side in images.shape[2:])
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _loss(scores, labels):
    """Cross-entropy against the labels, downsampled (nearest) to the scores' size where that is smaller."""
    if tuple(scores.shape[2:]) != tuple(labels.shape[1:]):
        small = F.interpolate(labels.reshape(labels.shape[0], 1, *labels.shape[1:]), size=tuple(scores.shape[2:]),
                              mode="nearest")
        labels = small.reshape(small.shape[0], *small.shape[2:])
    return F.cross_entropy(scores, labels, ignore_index=IGNORE_INDEX)


def _optimizer(config, model):
    if config.optimizer == "adam":
        return optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


# ---------------------------------------------------------------- evaluation
def crf_options_for(height, width):
    """The CRF's settings for an image of this size: ``dense_crf``'s defaults (the example values of
    Krähenbühl's code and pydensecrf, not DeepLab v2's cross-validated ones; see ``dense_crf``), with the
    bilateral kernel's spatial reach, 80 pixels on a ~500-pixel photo, scaled to the image's size (on
    97-pixel synthetic images the 80-pixel reach wiped out small objects: validation mIoU 0.253 against
    0.263 scaled)."""
    return {"bi_xy_std": 80.0 * min(height, width) / 500}


def evaluate(model, dataset, stats, scales=(1.0,), flip=False, crf=False, device="cpu", fusion="mean",
             progress=False, crf_options=None):
    """mIoU, pixel accuracy and per-class IoU of ``model`` on ``dataset``, one image at a time.

    With ``crf`` the fused probabilities are refined by the fully connected CRF
    (on the unnormalised image, as DeepLab v2 does) before the argmax, with
    ``crf_options`` (default: ``crf_options_for`` the image's size).
    """
    metrics = SegmentationMetrics(model.num_classes, ignore_index=IGNORE_INDEX)
    transform = eval_transform(*(s for s in stats if s is not None))
    items = tqdm(range(len(dataset)), desc="evaluating", leave=False) if progress else range(len(dataset))
    for index in items:
        image, label = dataset[index]
        normalised, _ = transform(image, label, np.random.default_rng(0))
        batch = minidl.tensor(normalised[None], device=device)
        # the image as it is, not padded to a multiple of the output stride: training crops are not padded, and
        # padding moves every score cell (by up to a stride at the far corner) away from where the model learnt it
        probs = multi_scale_predict(model, batch, scales=scales, flip=flip, fusion=fusion)
        probs = probs.numpy()[0]
        if crf:
            options = crf_options_for(*label.shape) if crf_options is None else crf_options
            probs = dense_crf(_to_uint8(image), probs, **options)
        metrics.update(probs.argmax(0), label)
    return metrics.compute()


def _to_uint8(image):
    """(3, H, W) floats in [0, 1] → (H, W, 3) uint8, the CRF's colour image."""
    return np.ascontiguousarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0))


# ---------------------------------------------------------------- the loop
def _checkpoint_path(out):
    return os.path.join(out, "checkpoint.npz")


def _save(out, model, optimizer, scheduler, iteration, config):
    io.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": iteration,
        "rng": minidl.get_rng_state(),
        "config": dataclasses.asdict(config),
    }, _checkpoint_path(out))


def _log(out, record):
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def train(config, resume=False):
    """Train as ``config`` says; returns the model and the last evaluation's metrics.

    The data and the model are built before the run folder is made, so settings that cannot work leave
    nothing behind. Resuming a run that has already finished trains no further and returns the metrics
    of its last evaluation (from the log).
    """
    train_set, val_set, stats = build_datasets(config)
    if config.device.startswith("cuda") and isinstance(train_set, SyntheticSegmentation):
        train_set.fill_cache()  # all CPU cores at once: one thread drawing items would hold back a GPU
    minidl.manual_seed(config.seed)  # the same seed, the same initial weights and dropout masks
    model = build_model(config).to(config.device)
    optimizer = _optimizer(config, model)
    scheduler = optim.PolyLR(optimizer, max_iters=config.iterations, power=config.poly_power)
    start = _resume(config, model, optimizer, scheduler) if resume else 0
    if start >= config.iterations:
        return model, finished_run(config, start)
    start_run_folder(config, resume)
    loader = build_loader(config, train_set, stats)
    model.train()
    last_metrics = None
    steps = zip(range(start, config.iterations), loader.batches(start))
    bar = tqdm(steps, total=config.iterations, initial=start, desc="training", disable=not config.progress)
    clock = time.perf_counter()
    pending = []  # the iterations since the losses were last read: (iteration, loss, lr, seconds)
    for iteration, (images, labels) in bar:
        loss = segmentation_loss(model, images, labels, config.loss_on, config.train_scales)
        lr = scheduler.get_last_lr()[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        done = iteration + 1
        pending.append((done, loss.detach(), lr, round(time.perf_counter() - clock, 3)))
        # the graph holds every activation of the step; let it go now, not when the next forward has made its own
        del loss
        evaluating, saving = due(done, config.eval_every, config.iterations), due(done, config.checkpoint_every,
                                                                                   config.iterations)
        if not (evaluating or saving or due(done, config.log_every, config.iterations)):
            continue  # a GPU runs on: reading a loss would wait for it
        records, pending = read_losses(pending, bar, config.out), []
        if evaluating:
            last_metrics = evaluate(model, val_set, stats, device=config.device)
            model.train()
            records[-1].update(miou=last_metrics["miou"], pixel_accuracy=last_metrics["pixel_accuracy"])
        for record in records:
            _log(config.out, record)
        if saving:
            _save(config.out, model, optimizer, scheduler, done, config)
    plot_curves(config.out)
    return model, last_metrics


def read_losses(pending, bar, out):
    """The log records of the pending iterations, their losses read back in one go (one wait for a GPU).

    A non-finite loss stops training here, before anything is logged or saved: checkpoints are written
    only after the losses before them have been read, so the last one on disk is always a good one.
    """
    losses = [loss.data for _, loss, _, _ in pending]
    with backend.on_device_of(losses[0]):
        values = backend.to_numpy(get_array_module(*losses).stack(losses)).tolist()
    records = []
    for (done, _, lr, seconds), value in zip(pending, values):
        check_finite(value, done, out)
        records.append(iteration_record(bar, done, value, lr, seconds))
    return records


def check_finite(value, iteration, out):
    """Stop with ``TrainingDiverged`` if the loss of ``iteration`` (counted from 1) is NaN or infinite."""
    if not math.isfinite(value):
        raise TrainingDiverged(f"the loss became {value} at iteration {iteration}; training stopped. The last good "
                               f"checkpoint, {_checkpoint_path(out)}, was left as it was (lower --lr?)")


def iteration_record(bar, done, value, lr, seconds):
    """The log line of iteration ``done`` (counted from 1), whose loss and lr also go on the progress bar."""
    bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}")
    return {"iteration": done, "loss": value, "lr": lr, "seconds": seconds}


def due(done, every, iterations):
    """Whether an evaluation (or checkpoint) every ``every`` iterations falls after iteration ``done``."""
    return done % every == 0 or done == iterations


def finished_run(config, iteration):
    """Say that the run in ``config.out`` has nothing left to train; the metrics of its last evaluation."""
    print(f"{config.out}: the run is complete ({iteration} iterations of {config.iterations}); nothing left to train")
    return last_evaluation(config.out)


# Settings that change where or how visibly a run happens, not the weights it ends with (evaluation
# runs in eval mode, where nothing draws random numbers).
_INCIDENTAL = ("out", "device", "workers", "progress", "eval_every", "checkpoint_every", "log_every")


def train_or_load(config):
    """``train(config)``, unless ``config.out`` already holds a finished run with the same settings.

    Then that run's model is loaded instead of trained again (and evaluated on
    the validation set, for the metrics ``train`` would return). This is how the
    book's chapters share models: the first chapter that needs one trains it,
    later chapters and re-runs load it. A run with the same settings that
    stopped early (its checkpoint is behind) goes on from its checkpoint, exactly
    as ``train(config, resume=True)``; a run with other settings is trained afresh.
    """
    path = _checkpoint_path(config.out)
    if os.path.exists(path):
        state = io.load(path)
        wanted = {k: v for k, v in _as_json(config).items() if k not in _INCIDENTAL}
        defaults = _as_json(TrainConfig())
        # a field added since the run was saved reads as its default, the value the run was trained with
        saved = {k: v for k, v in _as_json({**defaults, **state.get("config", {})}).items() if k not in _INCIDENTAL}
        done = int(state.get("iteration", -1))
        if saved == wanted and done == config.iterations:
            model = build_model(config).to(config.device)
            model.load_state_dict(state["model"])
            _, val_set, stats = build_datasets(config)
            return model, evaluate(model, val_set, stats, device=config.device)
        if saved == wanted and 0 < done < config.iterations and "optimizer" in state:
            return train(config, resume=True)
    return train(config)


def _as_json(config):
    """A config (or its fields as a dict) with plain JSON values, so that a tuple and a list compare equal."""
    return json.loads(json.dumps(config if isinstance(config, dict) else dataclasses.asdict(config)))


def load_checkpoint_to_resume(config):
    """The state in ``config.out``'s checkpoint (written by minidl or by the PyTorch twin)."""
    path = _checkpoint_path(config.out)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    state = io.load(path)
    if "optimizer" not in state:
        raise ValueError(f"--resume: {path} holds a model's weights but no training state (optimizer, "
                         "schedule) to continue from")
    return state


def _resume(config, model, optimizer, scheduler):
    state = load_checkpoint_to_resume(config)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "rng" in state:  # a run of the PyTorch twin keeps torch's generator instead
        minidl.set_rng_state(state["rng"])
    iteration = int(state["iteration"])
    _truncate_log(config.out, iteration)
    return iteration


def start_run_folder(config, resume):
    """Make ``config.out``, start a fresh log unless resuming (the log was cut back to the checkpoint), and
    write config.json."""
    os.makedirs(config.out, exist_ok=True)
    log = os.path.join(config.out, "metrics.jsonl")
    if not resume and os.path.exists(log):
        os.remove(log)  # a fresh run starts a fresh log
    with open(os.path.join(config.out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)


def last_evaluation(out):
    """The metrics of the last evaluation in ``out``'s log (None if it has none)."""
    evaluated = [r for r in read_log(out) if "miou" in r] if os.path.exists(os.path.join(out, "metrics.jsonl")) else []
    return {k: evaluated[-1][k] for k in ("iteration", "miou", "pixel_accuracy")} if evaluated else None


def _truncate_log(out, iteration):
    """Forget log lines written after the checkpoint: the resumed run writes them again."""
    path = os.path.join(out, "metrics.jsonl")
    if os.path.exists(path):
        kept = [r for r in read_log(out) if r["iteration"] <= iteration]
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)


def plot_curves(out):
    """Loss and validation mIoU against iterations, as out/curves.png."""
    from matplotlib.figure import Figure  # not pyplot: no global backend switch inside a notebook

    records = read_log(out)
    fig = Figure(figsize=(10, 3.5))
    left, right = fig.subplots(1, 2)
    left.plot([r["iteration"] for r in records], [r["loss"] for r in records], lw=0.8)
    left.set(xlabel="iteration", ylabel="training loss", title="loss", yscale="log")
    evaluated = [r for r in records if "miou" in r]
    right.plot([r["iteration"] for r in evaluated], [r["miou"] for r in evaluated], "o-")
    right.set(xlabel="iteration", ylabel="validation mIoU", title="mIoU", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=100)
