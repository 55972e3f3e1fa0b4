"""A synthetic segmentation data set that ships as code: the embedded default for training DeepLab on a CPU.

``SyntheticSegmentation`` draws textured shapes on cluttered backgrounds, on the fly and deterministically:
item ``i`` of a (seed, split) pair is the same array whatever order items are asked in, on any machine.

The classes (``CLASSES``) and what tells them apart::

    id  name      shape                      texture (own parameters per instance)    colour family
    0   background  smooth colour field + blobs of faint texture + distractor strokes/arcs (any colour)
    1   disk      disk                       stripes, period 3-5 px, any angle        warm (red/orange)
    2   square    square                     stripes, period 3-5 px, any angle        warm
    3   ring      thin annulus (1.2-4 px)    smooth gradient                          cool (cyan/blue)
    4   triangle  equilateral triangle       checkerboard, cell 2-3.5 px              cool
    5   star      five-pointed star          checkerboard, cell 2-3.5 px              warm
    6   cross     plus sign                  dots, spacing 3.5-5.5 px                 green

The design makes each part of DeepLab earn its keep:

- **Shape at large scale (ASPP, image-level features).** Disk and square have the same texture and
  colour distributions: far from the outline a pixel of one is indistinguishable from a pixel of the
  other, so a large object is only labelled right with context reaching its outline. Star and triangle
  share their texture, triangle and ring their colours, star, disk and square their colours.
- **Scale.** Object size is log-uniform from ``min_radius`` (3 px: a few pixels) to ``max_radius``
  (0.45 of the shorter side: most of the image), so no single receptive field fits all.
- **Sharp boundaries (the v3+ decoder, the CRF).** Rings are 1.2-4 px thin, star and cross have thin
  limbs, small objects are a few pixels across, and objects occlude each other (the label follows the
  drawing order: a later object covers an earlier one in image and label alike). Edges are antialiased
  in the image and exact in the label (a pixel belongs to the object whose outline contains its
  centre), and object boundaries are colour edges, which is what the CRF's bilateral kernel exploits.
- **Clutter.** The background is a smooth random colour field in any hue (the objects' hues included),
  with blobs of faint stripes/checks/dots and thin distractor strokes and arcs in the objects' colours,
  all labelled background; then per-pixel Gaussian noise. Colour alone, or texture alone, does not
  decide a pixel.

**Context (the image-level branch): the scenes variant.** ``scenes=True`` (``data='scenes'`` in
``minidl.train`` and the CLI) adds what the default set lacks, classes that only context beyond the object
tells apart. Each image is a water scene (a blue-to-cyan field with horizontal ripples) or a road scene (a
grey field with dashed white or yellow lane lines), and two more classes share one look: a capsule with a
gradient texture in any hue, labelled ``boat`` (7) on water and ``car`` (8) on a road (2 object draws in
8 are one). Nothing inside a capsule says which it is, and a large one can cover most of the image, so its
middle pixels need the whole image's context: what v3's image pooling gives every pixel. Use it at 129
pixels or more, where objects and the papers' geometry have room: the book's experiments train on it at
129×129 (``book/experiments.py``); its statistics ``SCENES_MEAN``/``SCENES_STD`` were measured at 161×161.

Items are ``(image, label)``: image float32 ``(3, H, W)`` in [0, 1] (channels first, the layout the
models take), label int64 ``(H, W)``. The label is 255 (``IGNORE_INDEX``) only if ``ignore_boundary=w``
> 0 asks for it: then every pixel within ``w`` pixels of a class boundary is ignored, like VOC's
boundary band (off by default: the boundaries are exact here, and they are what the decoder and the
CRF are measured on).

Defaults: 97x97 images (odd, 16·6 + 1, as DeepLab's crop sizes are 16k + 1), all 7 classes, 2-6 objects
per image (about 20% of the pixels are foreground), seed 0, no cache (a 97x97 item takes 2-4 ms of one
CPU core to make; ``cache=True`` keeps made items in memory, about 120 kB each). Splits ``'train'``, ``'val'`` and ``'test'`` are
disjoint: each seeds its items with a different stream, ``SeedSequence((seed, split, index))``.
"""
import concurrent.futures
import math
import multiprocessing
import os

import numpy as np

from minidl.data.transforms import IGNORE_INDEX, TransformedItems, resize_bilinear
from minidl.data.voc import colorize as _colorize
from minidl.data.voc import palette as _palette

CLASSES = ("background", "disk", "square", "ring", "triangle", "star", "cross")
SPLITS = {"train": 0, "val": 1, "test": 2}

# The scenes variant (``scenes=True``): every image is a water or a road scene, and one more object, a
# capsule that looks the same in both, is a boat on water and a car on a road. Only the scene tells them apart.
SCENE_CLASSES = CLASSES + ("boat", "car")
SCENES = ("water", "road")
VEHICLE_OF_SCENE = {"water": "boat", "road": "car"}

# Per-channel mean and std of the default data set (train split, measured over 2000 images), for
# Normalize(SyntheticSegmentation.MEAN, SyntheticSegmentation.STD).
MEAN = (0.446, 0.428, 0.412)
STD = (0.187, 0.181, 0.189)
# The same for the scenes variant (161×161, train split, 2000 images).
SCENES_MEAN = (0.363, 0.433, 0.479)
SCENES_STD = (0.168, 0.149, 0.183)

# Hue families (hue in [0, 1), may wrap): objects draw their hue uniformly from their family.
_WARM = (-0.04, 0.11)
_COOL = (0.48, 0.66)
_GREEN = (0.17, 0.42)

# name -> (shape, texture, hue family, smallest radius in px that still shows the shape)
_SPECS = {
    "disk": ("disk", "stripes", _WARM, 0.0),
    "square": ("square", "stripes", _WARM, 0.0),
    "ring": ("ring", "gradient", _COOL, 4.5),
    "triangle": ("triangle", "checker", _COOL, 3.5),
    "star": ("star", "checker", _WARM, 5.0),
    "cross": ("cross", "dots", _GREEN, 3.5),
    "boat": ("capsule", "gradient", (0.0, 1.0), 3.5),  # boat and car: one look, any hue
    "car": ("capsule", "gradient", (0.0, 1.0), 3.5),
}


# --------------------------------------------------------------------------- colour


def _hsv_to_rgb(h, s, v):
    """HSV (h wraps around 1) to RGB float32, vectorised: inputs broadcast, the result has a last axis of 3."""
    h, s, v = (np.asarray(a, dtype=np.float32)[..., None] for a in (h, s, v))
    k = (np.array([5, 3, 1], np.float32) + (h % 1.0) * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _object_colours(rng, family):
    """Two colours of one hue family (the texture mixes them), with per-instance jitter."""
    hue = rng.uniform(*family)
    sat = rng.uniform(0.45, 0.95)
    val = rng.uniform(0.55, 0.98)
    c1 = _hsv_to_rgb(hue, sat, val)
    c2 = _hsv_to_rgb(hue + rng.uniform(-0.03, 0.03), np.clip(sat + rng.uniform(-0.2, 0.2), 0, 1),
                     val * rng.uniform(0.3, 0.7))
    if rng.random() < 0.5:
        c1, c2 = c2, c1
    return c1, c2


def _any_colour(rng, sat=(0.0, 0.9), val=(0.15, 0.95), count=None):
    """Colours of any hue: (3,), or (count, 3) when count is given."""
    return _hsv_to_rgb(rng.random(count), rng.uniform(*sat, count), rng.uniform(*val, count))


# --------------------------------------------------------------------------- signed distances
# Negative inside, positive outside, in pixels (exact or nearly so near the outline, which is all the
# antialiasing needs). (u, v) are the object's own coordinates: centred and rotated.


def _sd_box(u, v, hx, hy):
    qx, qy = np.abs(u) - hx, np.abs(v) - hy
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_triangle(u, v, r):
    """Equilateral triangle with circumradius r (after Inigo Quilez's sdEquilateralTriangle)."""
    k = math.sqrt(3.0)
    half_side = r * k / 2
    px = np.abs(u) - half_side
    py = v + half_side / k
    fold = px + k * py > 0
    px, py = np.where(fold, (px - k * py) / 2, px), np.where(fold, (-k * px - py) / 2, py)
    px = px - np.clip(px, -2 * half_side, 0)
    return -np.sqrt(px * px + py * py) * np.sign(py)


_K1 = (0.809016994375, -0.587785252292)


def _sd_star(u, v, r, inner):
    """Five-pointed star, outer radius r, inner radius about inner·r (after Quilez's sdStar5)."""
    k1x, k1y = _K1
    k2x, k2y = -k1x, k1y
    px, py = np.abs(u), v
    d = np.maximum(k1x * px + k1y * py, 0)
    px, py = px - 2 * d * k1x, py - 2 * d * k1y
    d = np.maximum(k2x * px + k2y * py, 0)
    px, py = px - 2 * d * k2x, py - 2 * d * k2y
    px, py = np.abs(px), py - r
    bax, bay = inner * -k1y, inner * k1x - 1.0
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0, r)
    return np.sqrt((px - bax * h) ** 2 + (py - bay * h) ** 2) * np.sign(py * bax - px * bay)


def _sd_segment(x, y, ax, ay, bx, by):
    pax, pay, bax, bay = x - ax, y - ay, bx - ax, by - ay
    h = np.clip((pax * bax + pay * bay) / max(bax * bax + bay * bay, 1e-9), 0, 1)
    return np.sqrt((pax - bax * h) ** 2 + (pay - bay * h) ** 2)


# --------------------------------------------------------------------------- textures (values in [0, 1])


def _texture(rng, kind, u, v, radius):
    if kind == "stripes":
        period, angle = rng.uniform(3.0, 5.0), rng.uniform(0, np.pi)
        s = np.sin(2 * np.pi * (u * math.cos(angle) + v * math.sin(angle)) / period + rng.uniform(0, 2 * np.pi))
        return 0.5 + 0.5 * np.tanh(2.5 * s)
    if kind == "checker":
        cell, angle = rng.uniform(2.0, 3.5), rng.uniform(0, np.pi / 2)
        a = (u * math.cos(angle) + v * math.sin(angle)) / cell + rng.uniform(0, 2)
        b = (-u * math.sin(angle) + v * math.cos(angle)) / cell + rng.uniform(0, 2)
        return 0.5 + 0.5 * np.tanh(4.0 * np.sin(np.pi * a) * np.sin(np.pi * b))
    if kind == "dots":
        spacing = rng.uniform(3.5, 5.5)
        dot = spacing * rng.uniform(0.22, 0.35)
        fu = (u / spacing + rng.uniform(0, 1)) % 1.0 - 0.5
        fv = (v / spacing + rng.uniform(0, 1)) % 1.0 - 0.5
        return np.clip(dot - np.sqrt(fu * fu + fv * fv) * spacing + 0.5, 0, 1)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        return np.clip(0.5 + 0.5 * (u * math.cos(angle) + v * math.sin(angle)) / max(radius, 1.0), 0, 1)
    raise ValueError(f"unknown texture {kind!r}")


def _grid_shape(grid, shape):
    """A coarse grid with about ``grid`` cells along the longer side and the image's aspect ratio."""
    return (max(2, int(round(grid * shape[0] / max(shape)))), max(2, int(round(grid * shape[1] / max(shape)))))


def _coarse_noise(rng, shape, grid, channels=1):
    """Smooth random field: a coarse grid of uniform values, resized bilinearly to ``shape``."""
    return resize_bilinear(rng.random((channels,) + _grid_shape(grid, shape), dtype=np.float32), shape)


def _paste(image, alpha, colour, window):
    """image[:, window] = image * (1 - alpha) + colour * alpha (colour: (3,) or (3, h, w))."""
    region = image[(slice(None),) + window]
    if np.ndim(colour) == 1:
        colour = np.asarray(colour, np.float32)[:, None, None]
    region += alpha * (colour - region)


def _window(cx, cy, reach, shape):
    """Pixel window (row slice, col slice) and its coordinate grids around (cx, cy), clipped to the image."""
    H, W = shape
    y0, y1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)) + 1, H)
    x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)) + 1, W)
    if y0 >= y1 or x0 >= x1:
        return None
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    return (slice(y0, y1), slice(x0, x1)), xs, ys


# --------------------------------------------------------------------------- the image generator


def _scene_colours(rng, scene, count):
    """The colour field of a scene: water is blue to cyan, a road grey."""
    if scene == "water":
        return _hsv_to_rgb(rng.uniform(0.5, 0.64, count), rng.uniform(0.35, 0.85, count), rng.uniform(0.3, 0.85, count))
    return _hsv_to_rgb(rng.random(count), rng.uniform(0.0, 0.1, count), rng.uniform(0.25, 0.65, count))


def _scene_marks(rng, image, scene):
    """What marks a scene besides its colours: horizontal ripples on water, dashed lane lines on a road."""
    H, W = image.shape[1:]
    ys = np.arange(H, dtype=np.float32)[:, None]
    xs = np.arange(W, dtype=np.float32)[None, :]
    if scene == "water":
        period = rng.uniform(4.0, 8.0)
        wobble = 1.5 * np.sin(2 * np.pi * xs / rng.uniform(20, 60) + rng.uniform(0, 2 * np.pi))
        ripples = np.clip(np.sin(2 * np.pi * (ys + wobble) / period + rng.uniform(0, 2 * np.pi)) - 0.6, 0, 1)
        image += rng.uniform(0.25, 0.5) * ripples[None]
        return
    for _ in range(int(rng.integers(1, 3))):  # lane lines across the image, dashed, white or yellow
        angle = rng.uniform(-0.35, 0.35) + (np.pi / 2 if rng.random() < 0.5 else 0.0)
        c, s_ = math.cos(angle), math.sin(angle)
        offset = rng.uniform(-0.3, 0.3) * max(H, W)
        across = (xs - W / 2) * -s_ + (ys - H / 2) * c - offset
        along = (xs - W / 2) * c + (ys - H / 2) * s_
        dash = rng.uniform(6, 12)
        on = ((along / dash + rng.uniform(0, 1)) % 1.0) < 0.55
        alpha = np.clip(rng.uniform(1.0, 2.0) - np.abs(across), 0, 1) * on
        colour = np.array((0.95, 0.95, 0.9) if rng.random() < 0.6 else (0.95, 0.8, 0.2), np.float32)
        image += alpha[None] * (colour[:, None, None] - image)


def _background(rng, shape, scene=None):
    H, W = shape
    # A smooth colour field: a few random colours (any hue; or the scene's), bilinearly blended.
    gh, gw = _grid_shape(int(rng.integers(2, 6)), shape)
    if scene is None:
        corners = _any_colour(rng, sat=(0.0, 0.7), val=(0.2, 0.9), count=gh * gw)
    else:
        corners = _scene_colours(rng, scene, gh * gw)
    image = resize_bilinear(corners.T.reshape(3, gh, gw), shape)
    if scene is not None:
        _scene_marks(rng, image, scene)
    # Medium-scale brightness noise.
    image += (rng.uniform(0.04, 0.14) * (_coarse_noise(rng, shape, int(rng.integers(8, 20))) - 0.5))
    # Blobs of faint texture (the objects' textures, in no object's shape).
    ys = np.arange(H, dtype=np.float32)[:, None]
    xs = np.arange(W, dtype=np.float32)[None, :]
    for _ in range(int(rng.integers(0, 3))):
        kind = ("stripes", "checker", "dots", "gradient")[int(rng.integers(4))]
        t = _texture(rng, kind, xs, ys, max(H, W) / 2)
        blob = np.clip((_coarse_noise(rng, shape, int(rng.integers(2, 5)))[0] - 0.55) * 8, 0, 1)
        contrast = rng.uniform(0.08, 0.3)
        image += (contrast * blob * (t - 0.5))[None] * (rng.uniform(0.5, 1.0, 3).astype(np.float32)[:, None, None])
    # Distractor strokes and arcs in any colour, the objects' included: background in the label.
    for _ in range(int(rng.integers(2, 9))):
        width = rng.uniform(0.6, 2.2)
        colour = _any_colour(rng, sat=(0.3, 0.95), val=(0.2, 0.98))
        if rng.random() < 0.7:
            ax, ay = rng.uniform(0, W), rng.uniform(0, H)
            length, angle = rng.uniform(6, 0.8 * max(H, W)), rng.uniform(0, 2 * np.pi)
            bx, by = ax + length * math.cos(angle), ay + length * math.sin(angle)
            cx, cy = (ax + bx) / 2, (ay + by) / 2
            win = _window(cx, cy, length / 2 + width + 1, shape)
            if win is None:
                continue
            window, xs, ys = win
            dist = _sd_segment(xs, ys, ax, ay, bx, by) - width / 2
        else:
            cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            radius = rng.uniform(4, 0.4 * max(H, W))
            start, span = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.4) * np.pi
            win = _window(cx, cy, radius + width + 1, shape)
            if win is None:
                continue
            window, xs, ys = win
            dx, dy = xs - cx, ys - cy
            dist = np.abs(np.sqrt(dx * dx + dy * dy) - radius) - width / 2
            theta = (np.arctan2(dy, dx) - start) % (2 * np.pi)
            dist = np.where(theta <= span, dist, np.inf)
        _paste(image, np.clip(0.5 - dist, 0, 1).astype(np.float32), colour, window)
    return image


def _sample_objects(rng, classes, shape, count, min_radius, max_radius, scene=None):
    objects = []
    for _ in range(count):
        cls = int(rng.integers(1, len(classes)))
        if scene is not None and classes[cls] in VEHICLE_OF_SCENE.values():  # 2 draws in 8: a vehicle
            cls = classes.index(VEHICLE_OF_SCENE[scene])
        _, _, _, smallest = _SPECS[classes[cls]]
        lo = max(min_radius, smallest)
        hi = max(max_radius, lo)
        radius = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        objects.append({
            "class": cls,
            "name": classes[cls],
            "radius": radius,
            "center": (float(rng.uniform(0, shape[1])), float(rng.uniform(0, shape[0]))),
            "angle": float(rng.uniform(0, 2 * np.pi)),
        })
    # Mostly large objects first, so that small ones stay visible, with enough jitter that large
    # objects also occlude small ones.
    keys = [-np.log(o["radius"]) + rng.normal(0, 0.6) for o in objects]
    return [objects[i] for i in np.argsort(keys, kind="stable")]


def _draw_object(rng, image, label, instances, k, obj):
    shape_kind, texture, family, _ = _SPECS[obj["name"]]
    r = obj["radius"]
    cx, cy = obj["center"]
    win = _window(cx, cy, r + 2, label.shape)
    if win is None:
        return
    window, xs, ys = win
    c, s = math.cos(obj["angle"]), math.sin(obj["angle"])
    dx, dy = xs - cx, ys - cy
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape_kind == "disk":
        sd = np.sqrt(u * u + v * v) - r
    elif shape_kind == "square":
        sd = _sd_box(u, v, 0.78 * r, 0.78 * r)
    elif shape_kind == "ring":
        thickness = float(np.clip(rng.uniform(0.1, 0.22) * r, 1.2, 4.0))
        obj["thickness"] = thickness
        sd = np.abs(np.sqrt(u * u + v * v) - (r - thickness / 2)) - thickness / 2
    elif shape_kind == "triangle":
        sd = _sd_triangle(u, v, r)
    elif shape_kind == "star":
        sd = _sd_star(u, v, r, rng.uniform(0.38, 0.5))
    elif shape_kind == "capsule":  # a stadium: half-length r, half-width r / 2
        sd = np.sqrt(np.maximum(np.abs(u) - r / 2, 0) ** 2 + v * v) - r / 2
    elif shape_kind == "cross":
        arm = rng.uniform(0.28, 0.4) * r
        sd = np.minimum(_sd_box(u, v, r, arm), _sd_box(u, v, arm, r))
    else:  # pragma: no cover - the table above is closed
        raise ValueError(shape_kind)
    alpha = np.clip(0.5 - sd, 0, 1).astype(np.float32)
    c1, c2 = _object_colours(rng, family)
    t = _texture(rng, texture, u, v, r).astype(np.float32)
    colour = c1[:, None, None] + (c2 - c1)[:, None, None] * t[None]
    _paste(image, alpha, colour, window)
    inside = sd < 0
    label[window][inside] = obj["class"]
    instances[window][inside] = k


def _boundary_band(label, width):
    """Pixels within ``width`` (Chebyshev distance) of a pixel of another class."""
    H, W = label.shape
    padded = np.pad(label, width, mode="edge")
    band = np.zeros(label.shape, bool)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy or dx:
                band |= padded[width + dy : width + dy + H, width + dx : width + dx + W] != label
    return band


def generate(rng, image_size=(97, 97), classes=CLASSES, max_objects=6, min_radius=3.0,
             max_radius=None, noise=(0.01, 0.05), ignore_boundary=0, scenes=False):
    """One (image, label, objects) from a generator: the drawing procedure behind ``SyntheticSegmentation``.

    ``objects`` lists what was drawn, in drawing order: class, name, radius (px), center (x, y), angle,
    and ``visible_pixels`` (its pixels left in the label after occlusion). With ``scenes`` (``classes``
    must then be ``SCENE_CLASSES``) each object also records the image's ``scene``.
    """
    H, W = image_size
    if max_radius is None:
        max_radius = 0.45 * min(H, W)
    scene = SCENES[int(rng.integers(len(SCENES)))] if scenes else None
    image = _background(rng, (H, W), scene)
    label = np.zeros((H, W), np.int64)
    objects = _sample_objects(rng, classes, (H, W), int(rng.integers(min(2, max_objects), max_objects + 1)),
                              min_radius, max_radius, scene)
    instances = np.full((H, W), -1, np.int64)
    for k, obj in enumerate(objects):
        _draw_object(rng, image, label, instances, k, obj)
    sigma = rng.uniform(*noise)
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    np.clip(image, 0, 1, out=image)
    visible = np.bincount(instances.ravel() + 1, minlength=len(objects) + 1)[1:]
    for obj, count in zip(objects, visible):
        obj["visible_pixels"] = int(count)
        if scene is not None:
            obj["scene"] = scene
    if ignore_boundary:
        label[_boundary_band(label, int(ignore_boundary))] = IGNORE_INDEX
    return image.astype(np.float32, copy=False), label, objects


class SyntheticSegmentation(TransformedItems):
    """Synthetic shapes on cluttered backgrounds, made on the fly, deterministic by (seed, split, index).

    Args:
        size: number of items (any; item i is made from its own seed, so sizes only cut the sequence).
        image_size: int or (height, width); default 97x97.
        num_classes: 2..7 (background plus the first num_classes - 1 shapes of ``CLASSES``); default 7
            (9 with ``scenes``: ``SCENE_CLASSES``).
        seed: base seed (an int >= 0).
        split: 'train', 'val' or 'test': disjoint item streams.
        cache: keep made items in memory (about 120 kB each at 97x97); default False.
        transform: optional ``t(image, label, rng)`` applied to each item (see ``transforms``); it gets the
            generator the ``DataLoader`` passes through ``get(index, rng)``, or fresh entropy otherwise.
        max_objects: each image holds 2..max_objects shapes (default 6; some may be hidden by others or
            lie partly outside the image).
        min_radius, max_radius: object radius range in pixels (log-uniform); defaults 3 and 0.45 of the
            shorter side.
        ignore_boundary: width in pixels of the band around class boundaries labelled 255 (default 0: none).
        scenes: each image a water or a road scene, with boats and cars that only the scene tells apart
            (see the module docstring); ``data='scenes'`` in ``minidl.train`` and the CLI.

    Items: ``(image float32 (3, H, W) in [0, 1], label int64 (H, W))``.
    """

    CLASSES = CLASSES
    MEAN = MEAN
    STD = STD
    ignore_index = IGNORE_INDEX

    def __init__(self, size=1000, image_size=97, num_classes=None, seed=0, split="train",
                 cache=False, transform=None, max_objects=6, min_radius=3.0, max_radius=None,
                 ignore_boundary=0, scenes=False):
        if int(size) != size or size < 0:
            raise ValueError(f"SyntheticSegmentation: size must be a non-negative int, got {size!r}")
        if isinstance(image_size, (int, np.integer)):
            image_size = (int(image_size), int(image_size))
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or min(image_size) < 16:
            raise ValueError(f"SyntheticSegmentation: image_size must be >= 16 (int or (h, w)), got {image_size}")
        if scenes:
            if num_classes not in (None, len(SCENE_CLASSES)):
                raise ValueError(f"SyntheticSegmentation: with scenes=True num_classes is {len(SCENE_CLASSES)} "
                                 f"({', '.join(SCENE_CLASSES)}), got {num_classes}")
            num_classes = len(SCENE_CLASSES)
        elif num_classes is None:
            num_classes = len(CLASSES)
        elif not 2 <= num_classes <= len(CLASSES):
            raise ValueError(
                f"SyntheticSegmentation: num_classes must be between 2 and {len(CLASSES)}, got {num_classes}"
            )
        if split not in SPLITS:
            raise ValueError(f"SyntheticSegmentation: split must be one of {sorted(SPLITS)}, got {split!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"SyntheticSegmentation: seed must be an int >= 0, got {seed!r}")
        if max_objects < 1:
            raise ValueError(f"SyntheticSegmentation: max_objects must be >= 1, got {max_objects}")
        self.size = int(size)
        self.image_size = image_size
        self.num_classes = int(num_classes)
        self.scenes = bool(scenes)
        self.classes = SCENE_CLASSES if self.scenes else CLASSES[: self.num_classes]
        if self.scenes:  # the class attributes describe the default set
            self.CLASSES, self.MEAN, self.STD = SCENE_CLASSES, SCENES_MEAN, SCENES_STD
        self.seed = int(seed)
        self.split = split
        self.transform = transform
        self.max_objects = int(max_objects)
        self.min_radius = float(min_radius)
        self.max_radius = None if max_radius is None else float(max_radius)
        self.ignore_boundary = int(ignore_boundary)
        self._cache = {} if cache else None

    def __len__(self):
        return self.size

    def _index(self, index):
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"SyntheticSegmentation indices are ints, got {type(index).__name__}")
        i = int(index)
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(f"index {index} out of range for SyntheticSegmentation of size {self.size}")
        return i

    def rng(self, index):
        """The generator item ``index`` is drawn from: SeedSequence((seed, split, index))."""
        return np.random.default_rng([self.seed, SPLITS[self.split], self._index(index)])

    def generate(self, index):
        """Make item ``index`` (no cache, no transform): ``(image, label, objects)``."""
        return generate(self.rng(index), self.image_size, self.classes, self.max_objects,
                        self.min_radius, self.max_radius, ignore_boundary=self.ignore_boundary, scenes=self.scenes)

    def load(self, index):
        """The untransformed ``(image, label)`` of item ``index`` (from the cache when on)."""
        i = self._index(index)
        if self._cache is not None and i in self._cache:
            image, label = self._cache[i]
            return image.copy(), label.astype(np.int64)
        image, label, _ = self.generate(i)
        if self._cache is not None:
            self._cache[i] = (image.copy(), label.astype(np.uint8))
        return image, label

    def fill_cache(self, processes=None):
        """Make every item now, in ``processes`` processes (default: one per CPU core), into the cache.

        Items are pure functions of (seed, split, index), so this changes nothing but when they are
        made: a GPU trains faster than one CPU thread can draw its first epoch (2-4 ms an item).
        """
        if self._cache is None:
            raise ValueError("SyntheticSegmentation.fill_cache: the set was made with cache=False")
        missing = [i for i in range(self.size) if i not in self._cache]
        processes = min(processes or os.cpu_count() or 1, max(1, len(missing) // 50))
        if processes <= 1:
            for i in missing:
                self.load(i)
            return self
        chunks = [missing[k::processes] for k in range(processes)]
        # spawn, not fork: the parent may hold threads (Numba's, BLAS's, CuPy's) that a fork would copy mid-work
        context = multiprocessing.get_context("spawn")
        try:
            with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
                for chunk, items in zip(chunks, pool.map(_made_items, [self._recipe()] * processes, chunks)):
                    self._cache.update(zip(chunk, items))
        except concurrent.futures.process.BrokenProcessPool:
            # a main script that spawned processes cannot re-import (stdin, no __main__ guard): make them here
            return self.fill_cache(processes=1)
        return self

    def _recipe(self):
        """What a worker process needs to make this set's items: the same set, without cache or transform."""
        return dict(size=self.size, image_size=self.image_size, num_classes=self.num_classes, seed=self.seed,
                    split=self.split, max_objects=self.max_objects, min_radius=self.min_radius,
                    max_radius=self.max_radius, ignore_boundary=self.ignore_boundary, scenes=self.scenes)

    def objects(self, index):
        """What item ``index`` shows: its objects in drawing order (class, name, radius, center, ...)."""
        return self.generate(index)[2]

    @staticmethod
    def palette(n=256):
        """VOC's colour palette: (n, 3) uint8, class k -> colour k, 255 -> (224, 224, 192)."""
        return _palette(n)

    @staticmethod
    def colorize(label):
        """An RGB uint8 picture of a label map (VOC's palette)."""
        return _colorize(label)

    def __repr__(self):
        return (f"SyntheticSegmentation(size={self.size}, image_size={self.image_size}, "
                f"num_classes={self.num_classes}, seed={self.seed}, split={self.split!r}, "
                f"cache={self._cache is not None}" + (", scenes=True)" if self.scenes else ")"))


def _made_items(recipe, indices):
    """Items ``indices`` of the set ``recipe`` describes, as its cache keeps them (a worker process's job)."""
    made = SyntheticSegmentation(**recipe, cache=True)
    for i in indices:
        made.load(i)
    return [made._cache[i] for i in indices]
