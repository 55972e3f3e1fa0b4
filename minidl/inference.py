"""Inference as the papers evaluate: whole images, several scales, flips, and the fusion of their scores.

DeepLab v2 feeds the image at scales 1, 0.75 and 0.5 through the shared
network, resizes each score map to the full size and keeps the element-wise
maximum. DeepLab v3 adds left-right flips and averages the class
probabilities. Both are ``multi_scale_predict`` with a different ``fusion``.
"""
import numpy as np

import minidl
import minidl.nn.functional as F
from minidl.tensor import Tensor, no_grad

FUSIONS = ("mean", "max")


def _logits(model, images):
    out = model(images)
    return out["out"] if isinstance(out, dict) else out  # torchvision-style models return a dict


def predict(model, images, stride=None):
    """Logits (N, C, H, W) for images (N, 3, H, W), at the images' own size.

    With ``stride`` the images are first padded at the bottom and right to a
    multiple of it (DeepLab's networks see whole strides), and the logits are
    cropped back. The pixels stay in place, but the coarse score grid is
    upsampled over the padded size, so its cells land up to a stride further
    down and right than on the unpadded image: use it for a model trained on
    padded inputs. A model trained on unpadded crops (``minidl.train``) is
    evaluated without it.
    """
    images = images if isinstance(images, Tensor) else minidl.tensor(images)
    if images.ndim != 4:
        raise ValueError(f"predict: expected images of shape (N, 3, H, W), got {images.shape}")
    h, w = images.shape[2:]
    if stride:
        pad_h, pad_w = -h % stride, -w % stride
        images = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
    return _logits(model, images)[:, :, :h, :w]


def multi_scale_predict(model, images, scales=(1.0,), flip=False, fusion="mean", stride=None):
    """Class probabilities (N, C, H, W) fused over ``scales`` (and their mirror images with ``flip``).

    ``fusion='max'`` keeps, per pixel and class, the largest score over the
    inputs and then takes the softmax (v2); ``fusion='mean'`` averages the
    softmax probabilities (v3). The model runs in eval mode without a graph.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"multi_scale_predict: fusion must be one of {FUSIONS}, got {fusion!r}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"multi_scale_predict: scales must be positive numbers, got {scales}")
    images = images if isinstance(images, Tensor) else minidl.tensor(images)
    size = images.shape[2:]
    was_training = model.training
    model.eval()
    fused = None
    try:
        with no_grad():
            for scale in scales:
                scaled = images if scale == 1 else F.interpolate(
                    images, size=_scaled(size, scale), mode="bilinear", align_corners=False)
                for mirrored in (False, True) if flip else (False,):
                    scores = _scores(model, scaled, mirrored, size, stride, fusion)
                    fused = scores if fused is None else _fuse(fused, scores, fusion)
    finally:
        model.train(was_training)
    if fusion == "max":
        return F.softmax(fused, 1)
    return fused / (len(scales) * (2 if flip else 1))


def _scaled(size, scale):
    return tuple(max(1, int(round(n * scale))) for n in size)


def _scores(model, images, mirrored, size, stride, fusion):
    """One input's contribution at full size: logits for max fusion, probabilities for mean."""
    if mirrored:
        images = _flip(images)
    logits = predict(model, images, stride)
    if mirrored:
        logits = _flip(logits)
    if tuple(logits.shape[2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits if fusion == "max" else F.softmax(logits, 1)


def _flip(x):
    """Mirror left-right (the last axis)."""
    xp = minidl.get_array_module(x.data)
    return Tensor(xp.ascontiguousarray(x.data[..., ::-1]))


def _fuse(a, b, fusion):
    xp = minidl.get_array_module(a.data)
    return Tensor(xp.maximum(a.data, b.data)) if fusion == "max" else a + b


def predict_labels(model, images, **options):
    """The most likely class per pixel (N, H, W) as a NumPy array; options as ``multi_scale_predict``."""
    probs = multi_scale_predict(model, images, **options)
    return np.asarray(probs.argmax(1).numpy())
