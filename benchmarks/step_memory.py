"""Peak memory of training steps on the CPU, as tracemalloc sees it (NumPy's arrays included).

    python benchmarks/step_memory.py             # as train() steps: each step's loss dropped once logged
    python benchmarks/step_memory.py --keep-loss # as train() stepped before session 6: the loss kept until
                                                 # the next step's forward had made its own

The main job's model (v3+, resnet_small, 64-channel head) at 4 × 97², Adam; the peak over ``--steps`` steps after
two warm-up steps.
"""
import argparse
import tracemalloc

import numpy as np

import minidl
from minidl.train import _optimizer, build_model, cpu_recipe, segmentation_loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep-loss", action="store_true")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    config = cpu_recipe("deeplabv3plus", backbone="resnet_small", batch_size=4)
    minidl.manual_seed(0)
    model = build_model(config).train()
    optimizer = _optimizer(config, model)
    rng = np.random.default_rng(0)
    images = minidl.tensor(rng.random((4, 3, 97, 97), dtype=np.float32))
    labels = minidl.tensor(rng.integers(0, config.num_classes, (4, 97, 97)))
    loss = None
    for step in range(2 + args.steps):
        if step == 2:
            tracemalloc.start()
        loss = segmentation_loss(model, images, labels, config.loss_on)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if not args.keep_loss:
            del loss
    print(f"peak over {args.steps} steps ({'loss kept' if args.keep_loss else 'loss dropped'}): "
          f"{tracemalloc.get_traced_memory()[1] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
