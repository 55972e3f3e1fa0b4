"""The book's block diagrams (book/diagrams.py) draw, and show the numbers of the model they are given.

The expected numbers are worked out here from the papers' and the backbones'
documented facts (2048 channels out of ResNet-101 and Xception-65, 256 after
ResNet's layer1 and Xception's entry block 2, 112 and 8 for the book's
MobileNetV2 ×0.35, 48 low-level channels per 256 head channels, a map of
ceil(side / OS)), not read back from the model.
"""
import importlib.util
import math
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

import minidl  # noqa: E402
from minidl.train import build_model, cpu_recipe  # noqa: E402

spec = importlib.util.spec_from_file_location(
    "book_diagrams", Path(__file__).resolve().parent.parent / "book" / "diagrams.py")
diagrams = importlib.util.module_from_spec(spec)
spec.loader.exec_module(diagrams)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def side(image_size, stride):
    return math.ceil(image_size / stride)


def drawn_texts(diagram):
    # the boxes' texts (the arrows are annotations with no text)
    return [text.get_text() for text in diagram.figure.axes[0].texts if not isinstance(text, Annotation)]


def assert_drawn(diagram):
    ax = diagram.figure.axes[0]
    assert len(ax.patches) == len(diagram.boxes)
    assert ax.get_title()
    assert sorted(drawn_texts(diagram)) == sorted(diagram.boxes.values())
    diagram.figure.canvas.draw()  # renders on Agg without error


def test_v2_diagram_of_the_papers_resnet101():
    model = minidl.models.deeplabv2("resnet101", num_classes=21)
    n = side(129, 8)  # 17: rates 18 and 24 reach past the map, 6 and 12 do not
    d = diagrams.deeplabv2_diagram(model, 129)
    assert_drawn(d)
    assert d.boxes["backbone"].startswith("resnet101\n")
    assert f"→ 2048×{n}×{n}\n(OS 8)" in d.boxes["backbone"]
    for i, rate in enumerate((6, 12, 18, 24)):
        text = d.boxes[f"branch {i}"]
        assert text.startswith(f"3×3 conv, rate {rate}\n2048→21 ch")
        assert ("= 1×1 on this map" in text) == (rate >= n)
        assert text.endswith(f"→ 21×{n}×{n}")
    assert d.boxes["upsample"] == f"bilinear upsampling\n{n}×{n} → 129×129\n→ 21×129×129"


def test_v3_diagram_of_the_papers_resnet101():
    model = minidl.models.deeplabv3("resnet101", num_classes=21)
    n = side(129, 16)  # 9
    d = diagrams.deeplabv3_diagram(model, 129)
    assert_drawn(d)
    assert f"→ 2048×{n}×{n}\n(OS 16)" in d.boxes["backbone"]
    assert d.boxes["branch 0"].startswith("1×1 conv\n2048→256 ch")
    for i, rate in enumerate((6, 12, 18), start=1):
        assert d.boxes[f"branch {i}"].startswith(f"3×3 conv, rate {rate}\n2048→256 ch, BN, ReLU")
        assert ("= 1×1 on this map" in d.boxes[f"branch {i}"]) == (rate >= n)
    assert d.boxes["branch 4"].startswith("image pooling")
    assert d.boxes["concat"].endswith(f"→ {5 * 256}×{n}×{n}")
    assert d.boxes["project"].startswith(f"1×1 conv\n{5 * 256}→256 ch")
    assert d.boxes["classifier"] == f"1×1 conv classifier\n256→21 ch\n→ 21×{n}×{n}"


def test_v3plus_diagram_of_the_papers_xception65():
    model = minidl.models.deeplabv3plus("xception65", num_classes=21)
    n, low = side(129, 16), side(129, 4)
    d = diagrams.deeplabv3plus_diagram(model, 129)
    assert_drawn(d)
    assert d.boxes["backbone"].startswith("xception65\n")
    assert f"→ 2048×{n}×{n}\n(OS 16)" in d.boxes["backbone"]
    assert d.boxes["branch 1"].startswith("3×3 separable, rate 6\n2048→256 ch")
    assert d.boxes["encoder upsample"] == f"bilinear upsampling\n{n}×{n} → {low}×{low}\n→ 256×{low}×{low}"
    assert d.boxes["low-level"].startswith(f"low-level features\n256×{low}×{low} (OS 4)\n1×1 conv\n256→48 ch")
    assert d.boxes["decoder concat"].endswith(f"→ {256 + 48}×{low}×{low}")
    assert d.boxes["fuse 0"].startswith(f"3×3 separable\n{256 + 48}→256 ch")
    assert d.boxes["fuse 1"].startswith("3×3 separable\n256→256 ch")
    assert d.boxes["upsample"].endswith("→ 21×129×129")


@pytest.mark.parametrize("name, stride", [("deeplabv2", 8), ("deeplabv3", 16), ("deeplabv3plus", 16)])
def test_diagrams_of_the_books_small_models(name, stride):
    config = cpu_recipe(name, output_stride=stride)
    draw = {"deeplabv2": diagrams.deeplabv2_diagram, "deeplabv3": diagrams.deeplabv3_diagram,
            "deeplabv3plus": diagrams.deeplabv3plus_diagram}[name]
    n = side(config.image_size, stride)
    d = draw(build_model(config), config.image_size)
    assert_drawn(d)
    assert f"→ 112×{n}×{n}\n(OS {stride})" in d.boxes["backbone"]  # MobileNetV2 ×0.35's last block
    if name == "deeplabv2":
        assert d.boxes["branch 0"].startswith(f"3×3 conv, rate 6\n112→{config.num_classes} ch")
    else:
        assert d.boxes["project"].startswith(f"1×1 conv\n{5 * config.head_channels}→{config.head_channels} ch")
    if name == "deeplabv3plus":
        low, projected = side(config.image_size, 4), config.head_channels * 48 // 256
        assert d.boxes["low-level"].startswith(f"low-level features\n8×{low}×{low} (OS 4)\n1×1 conv\n8→{projected} ch")


def test_feature_maps_leaves_the_training_mode_as_it_was():
    model = build_model(cpu_recipe("deeplabv3"))
    model.train()
    diagrams.feature_maps(model, 65)
    assert all(module.training for module in model.modules())
