"""Block diagrams of DeepLab v2, v3 and v3+, drawn from a built model.

Every number a diagram shows is read from the model it is given: channel
counts and atrous rates from its modules, map sizes and output strides from
one forward pass of its backbone on a zero image of the size asked for. So the
same function draws the book's small CPU model and the papers' ResNet-101 or
Xception-65 with a 256-channel head, and each comes out right.

Boxes are operations; each box ends with the tensor it hands on, channels ×
height × width. Each function returns a ``Diagram``: the figure, and the text
of every box, so that a test (or a reader) can check the numbers against the
model.
"""
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Patch

import minidl
from minidl import nn
from minidl.models.aspp import ASPPPooling
from minidl.models.summary import output_stride

BOX_WIDTH, BOX_HEIGHT, COLUMN, ROW = 2.2, 1.05, 2.5, 1.2  # in grid units
INCHES = 0.66  # figure inches per grid unit (v3+ is ten columns, 16 inches, wide)
# each kind of box: its colour and its name in the legend
KINDS = {"data": ("#e8e8e8", "image"), "backbone": ("#c6dbef", "backbone"), "atrous": ("#fdd0a2", "atrous 3×3 conv"),
         "conv": ("#c7e9c0", "other conv"), "merge": ("#f2f0f7", "sum or concatenation"),
         "resize": ("#fff7bc", "bilinear resizing")}


@dataclass(frozen=True)
class Box:
    key: str
    text: str
    column: float
    row: float
    kind: str


@dataclass
class Diagram:
    """A drawn block diagram: the figure, and ``boxes``, each box's key → the text it shows."""

    figure: object
    boxes: dict


def feature_maps(model, image_size):
    """The backbone's outputs for one image_size² image: {name: (channels, height, width, output stride)}.

    Runs the backbone once on zeros, without a graph and in eval mode (the
    modes are put back afterwards), so the sizes are the model's own.
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with minidl.no_grad():
            features = model.backbone(minidl.zeros(1, model.in_channels, image_size, image_size))
    finally:
        for module, training in modes.items():
            module.training = training
    return {name: (c, h, w, output_stride((image_size, image_size), (h, w)))
            for name, (_, c, h, w) in ((name, tuple(t.shape)) for name, t in features.items())}


def shape_text(channels, height, width):
    """The tensor a box hands on: '→ 256×33×33'."""
    return f"→ {channels}×{height}×{width}"


def conv_text(conv, name="conv"):
    """'3×3 conv, rate 6' (the rate only when atrous) and 'in→out channels' of a Conv2d."""
    k, rate = conv.kernel_size[0], conv.dilation[0]
    return f"{k}×{k} {name}" + (f", rate {rate}" if rate > 1 else "") + f"\n{conv.in_channels}→{conv.out_channels} ch"


def degenerate_note(rate, height, width):
    # padding = rate: once the rate reaches the map's side, every outer tap of the 3×3 kernel reads padding
    return "\n= 1×1 on this map" if rate >= max(height, width) else ""


def branch_text(branch, height, width):
    """One v3 ASPP branch or decoder conv: a 1×1 conv, a dense or separable 3×3 (atrous) conv, or image pooling."""
    if isinstance(branch, ASPPPooling):
        conv = branch[1]
        return f"image pooling: average,\n1×1 conv {conv.in_channels}→{conv.out_channels} ch\nBN, ReLU, upsample"
    if isinstance(branch, nn.SeparableConv2d):
        depthwise, pointwise = branch.depthwise, branch.pointwise
        rate = depthwise.dilation[0]
        return ("3×3 separable" + (f", rate {rate}" if rate > 1 else "")
                + f"\n{depthwise.in_channels}→{pointwise.out_channels} ch, BN, ReLU" + degenerate_note(rate, height, width))
    conv = branch[0]
    note = degenerate_note(conv.dilation[0], height, width) if conv.kernel_size[0] > 1 else ""
    return conv_text(conv) + ", BN, ReLU" + note


def draw(boxes, arrows, title):
    """A figure with ``boxes`` on a grid of columns and rows, and an arrow for each (source key, target key)."""
    columns, rows = [b.column for b in boxes], [b.row for b in boxes]
    left, right = min(columns) * COLUMN - BOX_WIDTH / 2 - 0.1, max(columns) * COLUMN + BOX_WIDTH / 2 + 0.1
    bottom, top = min(rows) * ROW - BOX_HEIGHT / 2 - 0.1, max(rows) * ROW + BOX_HEIGHT / 2 + 0.1
    fig, ax = plt.subplots(figsize=((right - left) * INCHES, (top - bottom) * INCHES + 0.7))
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_axis_off()
    ax.set_title(title)
    where = {b.key: (b.column * COLUMN, b.row * ROW) for b in boxes}
    for b in boxes:
        x, y = where[b.key]
        ax.add_patch(FancyBboxPatch((x - BOX_WIDTH / 2, y - BOX_HEIGHT / 2), BOX_WIDTH, BOX_HEIGHT,
                                    boxstyle="round,pad=0.02", facecolor=KINDS[b.kind][0], edgecolor="#444444"))
        ax.text(x, y, b.text, ha="center", va="center", fontsize=6)
    for source, target in arrows:
        (x0, y0), (x1, y1) = where[source], where[target]
        if x1 > x0:  # left to right: from the right edge to the left edge
            start, end = (x0 + BOX_WIDTH / 2, y0), (x1 - BOX_WIDTH / 2, y1)
        else:  # straight down into the box below
            start, end = (x0, y0 - BOX_HEIGHT / 2), (x1, y1 + BOX_HEIGHT / 2)
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color="#444444", lw=0.9))
    shown = [kind for kind in KINDS if any(b.kind == kind for b in boxes)]
    ax.legend(handles=[Patch(facecolor=KINDS[kind][0], edgecolor="#444444", label=KINDS[kind][1]) for kind in shown],
              loc="upper center", bbox_to_anchor=(0.5, 0), ncol=len(shown), fontsize=7, frameon=False)
    return fig


def _diagram(boxes, arrows, title):
    return Diagram(draw(boxes, arrows, title), {b.key: b.text for b in boxes})


def _stacked(count, centre):
    # the rows of ``count`` boxes stacked one above the other around ``centre``
    return [centre + (count - 1) / 2 - i for i in range(count)]


def backbone_name(model):
    """The name the backbone was built by ('resnet101', 'xception65', ...), else its class's name."""
    built_by = getattr(model, "make_backbone", None)
    arguments = getattr(built_by, "args", ())  # the factories' functools.partial(build_backbone, name, ...)
    return arguments[0] if arguments and isinstance(arguments[0], str) else type(model.backbone).__name__


def _input_and_backbone(model, image_size, out, row=0):
    """The image and the backbone boxes; the backbone's box ends with its final features and their output stride."""
    channels, height, width, stride = out
    weights = sum(p.numel() for p in model.backbone.parameters())
    boxes = [Box("image", f"image\n{model.in_channels}×{image_size}×{image_size}", 0, row, "data"),
             Box("backbone", f"{backbone_name(model)}\n{weights / 1e6:.2f} M weights\n"
                 f"{shape_text(channels, height, width)}\n(OS {stride})", 1, row, "backbone")]
    return boxes, [("image", "backbone")]


def _upsample(column, row, source, model, image_size, height, width, boxes, arrows):
    """The final bilinear upsampling of the class scores to the input's size."""
    boxes.append(Box("upsample", f"bilinear upsampling\n{height}×{width} → {image_size}×{image_size}\n"
                     + shape_text(model.num_classes, image_size, image_size), column, row, "resize"))
    arrows.append((source, "upsample"))


def deeplabv2_diagram(model, image_size):
    """DeepLab v2 (``DeepLabV2``): backbone → ASPP-L, one atrous 3×3 conv per rate straight to scores, summed."""
    maps = feature_maps(model, image_size)
    _, height, width, _ = maps["out"]
    boxes, arrows = _input_and_backbone(model, image_size, maps["out"])
    branches = model.aspp.branches
    for i, (row, conv) in enumerate(zip(_stacked(len(branches), 0), branches)):
        text = conv_text(conv) + degenerate_note(conv.dilation[0], height, width)
        boxes.append(Box(f"branch {i}", text + "\n" + shape_text(conv.out_channels, height, width), 2, row, "atrous"))
        arrows += [("backbone", f"branch {i}"), (f"branch {i}", "sum")]
    boxes.append(Box("sum", f"sum of {len(branches)}\nscore maps\n" + shape_text(model.num_classes, height, width),
                     3, 0, "merge"))
    _upsample(4, 0, "sum", model, image_size, height, width, boxes, arrows)
    return _diagram(boxes, arrows, f"DeepLab v2 (ASPP-L) on a {image_size}×{image_size} image")


def _aspp(model, out, row, boxes, arrows):
    """v3's ASPP from column 2 on: its branches, the concatenation and the 1×1 projection (key 'project')."""
    _, height, width, _ = out
    branches, channels = model.aspp.convs, model.aspp.out_channels
    for i, (branch_row, branch) in enumerate(zip(_stacked(len(branches), row), branches)):
        atrous = i > 0 and not isinstance(branch, ASPPPooling)
        text = branch_text(branch, height, width) + "\n" + shape_text(channels, height, width)
        boxes.append(Box(f"branch {i}", text, 2, branch_row, "atrous" if atrous else "conv"))
        arrows += [("backbone", f"branch {i}"), (f"branch {i}", "concat")]
    project, dropout = model.aspp.project[0], model.aspp.project[3]
    boxes += [Box("concat", f"concatenate\n{len(branches)} branches\n"
                  + shape_text(project.in_channels, height, width), 3, row, "merge"),
              Box("project", conv_text(project) + f",\nBN, ReLU, dropout {dropout.p:g}\n"
                  + shape_text(project.out_channels, height, width), 4, row, "conv")]
    arrows.append(("concat", "project"))


def deeplabv3_diagram(model, image_size):
    """DeepLab v3 (``DeepLabV3``): backbone → ASPP (1×1, atrous 3×3s, image pooling) → concat → 1×1 → classifier."""
    maps = feature_maps(model, image_size)
    _, height, width, _ = maps["out"]
    boxes, arrows = _input_and_backbone(model, image_size, maps["out"])
    _aspp(model, maps["out"], 0, boxes, arrows)
    boxes.append(Box("classifier", conv_text(model.classifier, "conv classifier") + "\n"
                     + shape_text(model.num_classes, height, width), 5, 0, "conv"))
    arrows.append(("project", "classifier"))
    _upsample(6, 0, "classifier", model, image_size, height, width, boxes, arrows)
    return _diagram(boxes, arrows, f"DeepLab v3 (ASPP with image pooling) on a {image_size}×{image_size} image")


def deeplabv3plus_diagram(model, image_size):
    """DeepLab v3+ (``DeepLabV3Plus``): v3's ASPP as encoder; a decoder joins it to the projected OS-4 features."""
    maps = feature_maps(model, image_size)
    _, height, width, _ = maps["out"]
    low_channels, low_height, low_width, low_stride = maps["low_level"]
    decoder, channels = model.decoder, model.aspp.out_channels
    encoder_row, decoder_row = 2, -1.5
    boxes, arrows = _input_and_backbone(model, image_size, maps["out"], encoder_row)
    _aspp(model, maps["out"], encoder_row, boxes, arrows)
    low = decoder.low_level[0]
    fuse = [branch_text(conv, low_height, low_width) for conv in decoder.fuse]
    fused = decoder.classifier.in_channels
    boxes += [Box("encoder upsample", f"bilinear upsampling\n{height}×{width} → {low_height}×{low_width}\n"
                  + shape_text(channels, low_height, low_width), 5, encoder_row, "resize"),
              Box("low-level", f"low-level features\n{low_channels}×{low_height}×{low_width} (OS {low_stride})\n"
                  + conv_text(low) + ", BN, ReLU\n" + shape_text(low.out_channels, low_height, low_width),
                  1, decoder_row, "conv"),
              Box("decoder concat", "concatenate\n" + shape_text(channels + low.out_channels, low_height, low_width),
                  5, decoder_row, "merge"),
              Box("fuse 0", fuse[0] + "\n" + shape_text(fused, low_height, low_width), 6, decoder_row, "conv"),
              Box("fuse 1", fuse[1] + "\n" + shape_text(fused, low_height, low_width), 7, decoder_row, "conv"),
              Box("classifier", conv_text(decoder.classifier, "conv classifier") + "\n"
                  + shape_text(model.num_classes, low_height, low_width), 8, decoder_row, "conv")]
    arrows += [("project", "encoder upsample"), ("encoder upsample", "decoder concat"), ("backbone", "low-level"),
               ("low-level", "decoder concat"), ("decoder concat", "fuse 0"), ("fuse 0", "fuse 1"),
               ("fuse 1", "classifier")]
    _upsample(9, decoder_row, "classifier", model, image_size, low_height, low_width, boxes, arrows)
    return _diagram(boxes, arrows, f"DeepLab v3+ (encoder–decoder) on a {image_size}×{image_size} image")
