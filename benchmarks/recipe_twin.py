"""Train the PyTorch twin of a minidl DeepLab with minidl's own data pipeline: a fast way to compare recipes.

The model comes from ``reference.models`` (same structure and initialisation rules as minidl's), the batches
from ``minidl.train.build_loader`` (same data, same augmentation, same order), the loss, Adam and the poly
schedule as ``minidl.train``; evaluation as ``minidl.train.evaluate`` (single scale, unpadded). On one thread
it runs about twice as fast as minidl on two, so two settings can be compared side by side on a 2-core
machine; a setting that wins here is then checked with minidl itself (``minidl run`` / ``minidl train``).

    python benchmarks/recipe_twin.py --iters 3500 --backbone resnet_small --random-scale 1,1
    T=2 python benchmarks/recipe_twin.py ...        # T: PyTorch threads (default 1)

Prints the validation mIoU and per-class IoU every ``--eval-every`` iterations.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import reference.models.deeplab as twins  # noqa: E402
from minidl.cli import _scale_range  # noqa: E402
from minidl.data import eval_transform  # noqa: E402
from minidl.metrics import SegmentationMetrics  # noqa: E402
from minidl.train import IGNORE_INDEX, build_datasets, build_loader, cpu_recipe  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="deeplabv3plus")
    p.add_argument("--backbone", default="mobilenetv2_small")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--head-channels", type=int, default=64)
    p.add_argument("--output-stride", type=int, default=16)
    p.add_argument("--random-scale", type=_scale_range, default=(0.5, 2.0), help="LOW,HIGH")
    p.add_argument("--model-options", default="{}", help="JSON: more keywords for the model's factory")
    p.add_argument("--train-size", type=int, default=2000, help="synthetic training items")
    p.add_argument("--eval-every", type=int, default=500)
    return p.parse_args(argv)


def evaluate(model, val_set, stats):
    model.eval()
    metrics = SegmentationMetrics(model.num_classes, ignore_index=IGNORE_INDEX)
    transform = eval_transform(*stats)
    with torch.no_grad():
        for index in range(len(val_set)):
            image, label = val_set[index]
            normalised, _ = transform(image, label, np.random.default_rng(0))
            metrics.update(model(torch.from_numpy(normalised[None])).numpy()[0].argmax(0), label)
    model.train()
    return metrics.compute()


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("T", "1")))
    config = cpu_recipe(args.model, backbone=args.backbone, iterations=args.iters, lr=args.lr,
                        batch_size=args.batch_size, head_channels=args.head_channels,
                        output_stride=args.output_stride, model_options=json.loads(args.model_options),
                        train_size=args.train_size,
                        random_scale=args.random_scale)
    train_set, val_set, stats = build_datasets(config)
    torch.manual_seed(config.seed)
    head = {} if config.model == "deeplabv2" else {"head_channels": config.head_channels}
    model = getattr(twins, config.model)(backbone=config.backbone, num_classes=config.num_classes,
                                         output_stride=config.output_stride, **head, **config.model_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1 - it / config.iterations) ** 0.9)
    print(vars(args), flush=True)
    start = time.perf_counter()
    batches = build_loader(config, train_set, stats).batches(0)
    for iteration, (images, labels) in zip(range(1, config.iterations + 1), batches):
        images, labels = torch.from_numpy(images.numpy()), torch.from_numpy(labels.numpy()).long()
        loss = F.cross_entropy(model(images), labels, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if iteration % args.eval_every == 0 or iteration == config.iterations:
            metrics = evaluate(model, val_set, stats)
            per_class = " ".join(f"{v:.2f}" for v in metrics["iou_per_class"])
            print(f"iteration {iteration}  {time.perf_counter() - start:.0f} s  loss {loss.item():.3f}  "
                  f"mIoU {metrics['miou']:.3f}  per class {per_class}", flush=True)


if __name__ == "__main__":
    main()
