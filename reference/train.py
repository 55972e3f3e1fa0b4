"""Train the PyTorch twin of a minidl DeepLab, on one process or on many through PyTorch's own DDP.

``python -m reference.train`` takes the arguments of ``minidl train`` (the same parser, the same
``TrainConfig``), trains the model of the same name from ``reference.models`` on the same batches (minidl's
data sets, transforms, epoch order and per-item generators), with the same loss and poly schedule, and
writes the same run folder: ``checkpoint.npz`` in minidl's format (so ``minidl eval``, ``minidl predict``
and ``minidl train --resume`` read it, and this trainer resumes minidl's runs), ``metrics.jsonl``,
``config.json`` and ``curves.png``. Its own options: ``--amp`` (bf16 or fp16 autocast), ``--sync-bn``,
``--dtype float64``.

    python -m reference.train --model deeplabv3 --backbone resnet_small --iters 2000 --out runs/v3
    torchrun --nproc_per_node=8 -m reference.train --model deeplabv3plus --backbone resnet101 \\
        --data voc:VOCdevkit/VOC2012 --train-split train_aug --batch-size 16 --crop-size 513 ... --device cuda

Under ``torchrun`` (``WORLD_SIZE`` > 1) the model runs in ``DistributedDataParallel`` (``gloo`` on the CPU,
``nccl`` on CUDA) with ``SyncBatchNorm`` (``--no-sync-bn`` turns it off; on the CPU, where PyTorch's does
not run, ``CPUSyncBatchNorm`` computes the same statistics); ``--batch-size`` is the global
batch, each process taking an equal share of every batch through a ``DistributedSampler`` whose epoch
advances; the loss is the mean over the global batch's labelled pixels, so N processes take the steps one
process would; the validation confusion matrix is summed over the processes; only rank 0 writes files.
On one process resuming is exact; on N, rank 0's random generator is kept, so dropout masks differ.
"""
import argparse
import dataclasses
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

import reference.models as twins
from minidl import io, optim
from minidl.cli import add_train_arguments, config_from_args, report_run
from minidl.data import eval_transform
from minidl.metrics import SegmentationMetrics
from minidl.train import (IGNORE_INDEX, build_datasets, build_loader, check_finite, due, finished_run,
                          iteration_record, load_checkpoint_to_resume, model_arguments, plot_curves,
                          start_run_folder)
from minidl.train import _checkpoint_path, _log, _truncate_log

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------- processes
@dataclasses.dataclass
class Processes:
    """Where this process stands: its rank among ``world_size`` processes, and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def writes(self):
        return self.rank == 0

    def sum(self, tensor):
        """``tensor`` summed over the processes, in place (nccl takes it on this process's GPU)."""
        if self.world_size > 1:
            moved = tensor.to(self.device)
            dist.all_reduce(moved)
            tensor.copy_(moved)
        return tensor


def start_processes(device):
    """One process, or the torchrun group this one belongs to (gloo on the CPU, nccl on CUDA)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes(device=torch.device(device))
    local_rank = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    where = torch.device("cuda", local_rank) if device == "cuda" else torch.device("cpu")
    return Processes(dist.get_rank(), dist.get_world_size(), where)


# ---------------------------------------------------------------- SyncBatchNorm on the CPU as well
class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the gradients the same way: the statistics of a batch split
    over processes, differentiable."""

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """What ``torch.nn.SyncBatchNorm`` computes, on the CPU (gloo), where PyTorch's runs only on GPUs
    (and DDP refuses it): the mean and variance of the whole batch over all processes (two all-reduces),
    the normalisation, and the running statistics (momentum, unbiased variance) as PyTorch's; gradients
    flow through the all-reduces. Outside distributed training it is ``BatchNorm2d``."""

    def forward(self, input):
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        channels = (0, *range(2, input.dim()))
        count = _SumOverProcesses.apply(input.new_tensor(input.numel() // input.shape[1]))
        mean = _SumOverProcesses.apply(input.sum(channels)) / count
        centred = input - _per_channel(mean, input)
        var = _SumOverProcesses.apply((centred * centred).sum(channels)) / count
        self._update_running_stats(mean.detach(), var.detach() * count / (count - 1))
        out = centred * _per_channel(torch.rsqrt(var + self.eps), input)
        return out * _per_channel(self.weight, input) + _per_channel(self.bias, input) if self.affine else out

    @torch.no_grad()
    def _update_running_stats(self, mean, unbiased_var):
        if not self.track_running_stats:
            return
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(unbiased_var, factor)


def _per_channel(values, like):
    return values.reshape(1, -1, *([1] * (like.dim() - 2)))


def with_sync_batch_norm(model, device):
    """Every BatchNorm of ``model`` synchronised: PyTorch's ``SyncBatchNorm`` on GPUs, the one above on CPUs."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = CPUSyncBatchNorm  # the same state; only forward differs
    return model


# ---------------------------------------------------------------- data: minidl's batches, split over processes
class EpochItems(Dataset):
    """Item ``(epoch, index)`` as minidl's loader makes it: the data set's item through the loader's
    transform, drawing from the item's own generator (a pure function of seed, epoch and index)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader.dataset)

    def __getitem__(self, key):
        epoch, index = key
        return self.loader.load_item(epoch, index)


class EpochOrderSampler(DistributedSampler):
    """A ``DistributedSampler`` over minidl's epoch order: global batch k of an epoch is the loader's batch
    k (``loader.batch_size`` items), and each of the ``num_replicas`` processes takes every
    ``num_replicas``-th of them, from batch ``start`` (``set_epoch(epoch, start)``: resuming mid-epoch).
    Yields ``(epoch, index)`` for ``EpochItems``."""

    def __init__(self, loader, num_replicas, rank):
        super().__init__(EpochItems(loader), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=True)
        self.loader, self.start = loader, 0
        self.per_process = loader.batch_size // num_replicas

    def set_epoch(self, epoch, start=0):
        super().set_epoch(epoch)
        self.start = start

    def _mine(self):
        order = self.loader.order(self.epoch)[: len(self.loader) * self.loader.batch_size]
        return order[self.rank :: self.num_replicas][self.start * self.per_process :]

    def __iter__(self):
        return ((self.epoch, int(index)) for index in self._mine())

    def __len__(self):
        return len(self._mine())


def batch_stream(config, train_set, stats, processes, start):
    """This process's share of the batches of iterations start, start + 1, ... (endless)."""
    if config.batch_size % processes.world_size:
        raise ValueError(f"--batch-size {config.batch_size} (the global batch) must divide evenly over "
                         f"{processes.world_size} processes")
    loader = build_loader(config, train_set, stats)
    sampler = EpochOrderSampler(loader, processes.world_size, processes.rank)
    # a generator of its own: each epoch's iterator draws a seed from it, which from torch's global generator
    # would shift the dropout masks of a resumed run
    batches = DataLoader(EpochItems(loader), batch_size=sampler.per_process, sampler=sampler, drop_last=True,
                         num_workers=config.workers, pin_memory=processes.device.type == "cuda",
                         generator=torch.Generator().manual_seed(config.seed))
    epoch, batch = loader.position(start)
    while True:
        sampler.set_epoch(epoch, batch)
        yield from batches
        epoch, batch = epoch + 1, 0


# ---------------------------------------------------------------- model, loss, optimiser, schedule
class ScoreMaps(nn.Module):
    """What the loss is taken on (see ``minidl.train.segmentation_loss``): the logits upsampled to the
    images, or for DeepLab v2 the score map at the output stride. DDP wraps this module, so that both
    pass through its forward."""

    def __init__(self, model, loss_on):
        super().__init__()
        self.model, self.at_stride = model, loss_on == "downsampled_labels"

    def forward(self, images):
        return self.model.head(self.model.backbone(images)) if self.at_stride else self.model(images)


def build_model(config, dtype=torch.float32):
    return getattr(twins, config.model)(**model_arguments(config)).to(dtype)


def global_loss(scores, labels, processes):
    """(loss to differentiate, its value): cross-entropy ignoring 255, averaged over the labelled pixels of
    the global batch. DDP averages the processes' gradients, so each process's sum is scaled by
    world_size / (labelled pixels of all processes): the gradient is one process's on the whole batch."""
    if labels.shape[-2:] != scores.shape[-2:]:  # v2: labels downsampled to the score map, nearest
        labels = F.interpolate(labels[:, None].float(), size=scores.shape[-2:], mode="nearest")[:, 0].long()
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))  # autocast's halves: float32
    total = F.cross_entropy(scores, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    sums = processes.sum(torch.stack([total.detach(), (labels != IGNORE_INDEX).sum().to(total.dtype)]))
    return total * processes.world_size / sums[1], (sums[0] / sums[1]).item()


def build_optimizer(config, model):
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


class PolyLR(torch.optim.lr_scheduler.LRScheduler):
    """minidl's poly schedule (the same formula, the same state_dict fields) on a torch optimizer."""

    get_lr = optim.PolyLR.get_lr

    def __init__(self, optimizer, max_iters, power=0.9, min_lr=0, last_epoch=-1):
        self.max_iters, self.power, self.min_lr = max_iters, power, min_lr
        super().__init__(optimizer, last_epoch)


# ---------------------------------------------------------------- evaluation
def evaluate(model, val_set, stats, processes, autocast):
    """As ``minidl.train.evaluate`` (single scale, unpadded): each process takes every world_size-th
    image, and the confusion matrices are summed over the processes."""
    metrics = SegmentationMetrics(model.num_classes, ignore_index=IGNORE_INDEX)
    transform = eval_transform(*(s for s in stats if s is not None))
    dtype = next(model.parameters()).dtype
    model.eval()
    with torch.no_grad():
        for index in range(processes.rank, len(val_set), processes.world_size):
            image, label = val_set[index]
            normalised, _ = transform(image, label, np.random.default_rng(0))
            with autocast():
                scores = model(torch.from_numpy(normalised[None]).to(processes.device, dtype))
            metrics.update(scores.argmax(1)[0].cpu().numpy(), label)
    model.train()
    processes.sum(torch.from_numpy(metrics.confusion_matrix))  # shares the array's memory
    return metrics.compute()


# ---------------------------------------------------------------- checkpoints in minidl's format
def save(out, model, optimizer, scheduler, scaler, iteration, config):
    state = optimizer.state_dict()
    steps_as_ints = {i: {k: int(v) if k == "step" else v for k, v in s.items()} for i, s in state["state"].items()}
    io.save({
        "model": model.state_dict(),
        "optimizer": {**state, "state": steps_as_ints},  # minidl counts Adam's steps in ints, torch in tensors
        "scheduler": scheduler.state_dict(),
        "iteration": iteration,
        "torch_rng": rng_state(),
        "scaler": scaler.state_dict(),
        "config": dataclasses.asdict(config),
    }, _checkpoint_path(out))


def resume(config, model, optimizer, scheduler, scaler, processes):
    """Load ``config.out``'s checkpoint (minidl's or the twin's); returns its iteration."""
    state = load_checkpoint_to_resume(config)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state["model"].items()})
    optimizer.load_state_dict({**state["optimizer"], "state": {
        int(i): {k: torch.tensor(float(v)) if k == "step" else torch.from_numpy(np.asarray(v)) for k, v in s.items()}
        for i, s in state["optimizer"]["state"].items()}})
    scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    if "torch_rng" in state and processes.rank == 0:  # minidl's runs keep minidl's generator instead
        set_rng_state(state["torch_rng"])
    iteration = int(state["iteration"])
    if processes.writes:
        _truncate_log(config.out, iteration)
    return iteration


def rng_state():
    state = {"cpu": torch.get_rng_state().numpy()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state().numpy()
    return state


def set_rng_state(state):
    torch.set_rng_state(torch.from_numpy(np.asarray(state["cpu"])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.from_numpy(np.asarray(state["cuda"])))


# ---------------------------------------------------------------- the loop
def train(config, resume_run=False, amp=None, sync_bn=None, dtype=torch.float32):
    """Train as ``config`` says on this process (and its torchrun group); returns (model, last metrics)."""
    if amp and dtype != torch.float32:
        raise ValueError(f"--amp {amp} needs float32 parameters, not --dtype {str(dtype)[6:]}")
    if config.train_scales != (1.0,):
        raise ValueError(f"--train-scales {','.join(map(str, config.train_scales))}: v2's multi-scale inputs train in "
                         "minidl only (minidl train); the twin trains at scale 1")
    train_set, val_set, stats = build_datasets(config)  # settings checked before anything is written
    torch.manual_seed(config.seed)
    model = build_model(config, dtype)
    processes = start_processes(config.device)
    if sync_bn if sync_bn is not None else processes.world_size > 1:
        model = with_sync_batch_norm(model, processes.device)
    model.to(processes.device)
    optimizer = build_optimizer(config, model)
    scheduler = PolyLR(optimizer, max_iters=config.iterations, power=config.poly_power)
    scaler = torch.amp.GradScaler(processes.device.type, enabled=amp == "fp16")
    start = resume(config, model, optimizer, scheduler, scaler, processes) if resume_run else 0
    if processes.rank > 0:  # dropout masks of their own; rank 0 draws as one process would
        torch.manual_seed(config.seed * 1000 + processes.rank)
    if start >= config.iterations:
        return model, finished_run(config, start) if processes.writes else None
    if processes.writes:
        start_run_folder(config, resume_run)
    net = ScoreMaps(model, config.loss_on)
    if processes.world_size > 1:
        on_gpu = processes.device.type == "cuda"
        net = nn.parallel.DistributedDataParallel(net, device_ids=[processes.device.index] if on_gpu else None)

    def autocast():
        return torch.autocast(processes.device.type, dtype=AMP_DTYPES.get(amp), enabled=bool(amp))

    metrics = None
    steps = zip(range(start, config.iterations), batch_stream(config, train_set, stats, processes, start))
    bar = tqdm(steps, total=config.iterations, initial=start, desc="training",
               disable=not (config.progress and processes.writes))
    clock = time.perf_counter()
    for iteration, (images, labels) in bar:
        images, labels = images.to(processes.device, dtype), labels.to(processes.device)
        with autocast():
            scores = net(images)
        loss, value = global_loss(scores, labels, processes)  # the same on every process: all stop together
        check_finite(value, iteration + 1, config.out)
        lr = scheduler.get_last_lr()[0]
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        done = iteration + 1
        record = iteration_record(bar, done, value, lr, round(time.perf_counter() - clock, 3))
        if due(done, config.eval_every, config.iterations):
            metrics = evaluate(model, val_set, stats, processes, autocast)
            record.update(miou=metrics["miou"], pixel_accuracy=metrics["pixel_accuracy"])
        if processes.writes:
            _log(config.out, record)
            if due(done, config.checkpoint_every, config.iterations):
                save(config.out, model, optimizer, scheduler, scaler, done, config)
    if processes.writes:
        plot_curves(config.out)
    if processes.world_size > 1:
        dist.barrier()  # no process leaves, tearing down its connections, while rank 0 still writes
    return model, metrics


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m reference.train", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_train_arguments(parser)
    parser.add_argument("--amp", nargs="?", const="bf16", default=None, choices=sorted(AMP_DTYPES),
                        help="automatic mixed precision: bf16 (the default with --amp) or fp16 (with loss scaling)")
    parser.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                        help="SyncBatchNorm: batch statistics over all processes (default: on with more than one)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="parameters and activations (float64 for exact comparisons)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        _, metrics = train(config, args.resume, args.amp, args.sync_bn, getattr(torch, args.dtype))
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # errors a user can cause: say them plainly
        print(f"reference.train: error: {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(report_run(config.out, metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
