"""DeepLab v3+'s modified aligned Xception-65 against its PyTorch twin, and against the paper's layout.

Narrow nets (width_mult 0.1, one middle-flow unit) cover every output
stride in train and eval; the full-size network runs once at 65×65 (the
reference's float64 depthwise convs loop over channels, so it is the slow
part). Strides, rates, output sizes and the parameter count are checked
against hand-written expectations, not against minidl's own output.
"""
import math

import numba
import numpy as np
import pytest
import torch

import minidl
from minidl.models.backbones import build_backbone
from minidl.models.xception import xception65
from reference.models.xception import xception65 as reference_xception65
from helpers import check_module

NARROW = {"width_mult": 0.1, "middle_units": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread_each():
    """PyTorch's float64 depthwise convs run as many tiny OpenMP sections, one per channel; on a shared
    machine, PyTorch's and Numba's worker threads spin and take the cores from each other, so that
    one thread each is many times faster than two."""
    threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(threads[0])
    numba.set_num_threads(threads[1])


def both_outputs(output_stride, **options):
    """``make(lib)`` for check_module: xception65 from lib's package, its two outputs flattened side by side.

    One output covers both maps, and every parameter gets a gradient (the
    low-level map alone would leave the later flows without one).
    """
    def make(lib):
        package = "minidl" if lib is minidl else "reference"

        class BothOutputs(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = build_backbone("xception65", output_stride, package, **options)

            def forward(self, x):
                features = self.backbone(x)
                return lib.cat([lib.flatten(features["low_level"], 1), lib.flatten(features["out"], 1)], 1)

        return BothOutputs()
    return make


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_narrow_matches_reference(output_stride):
    check_module(both_outputs(output_stride, **NARROW), (2, 3, 33, 33))


def test_full_size_one_train_step_matches_reference():
    check_module(both_outputs(16), (1, 3, 65, 65), modes=("train",), steps=1)


@pytest.fixture(scope="module")
def full_size():
    """The paper's Xception-65 at OS 16 in minidl and PyTorch, float64, with the same weights, in eval mode."""
    torch.manual_seed(0)
    theirs = reference_xception65().double().eval()
    ours = xception65().double().eval()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def test_full_size_eval_matches_reference(full_size):
    ours, theirs = full_size
    x = np.random.default_rng(0).standard_normal((1, 3, 65, 65))
    with minidl.no_grad():
        features = ours(minidl.tensor(x))
    with torch.no_grad():
        expected = theirs(torch.tensor(x))
    assert features["out"].shape == (1, 2048, 5, 5) and features["low_level"].shape == (1, 256, 17, 17)
    for key in ("out", "low_level"):
        # fresh BN statistics and PyTorch's fan-out init make eval features tiny (~1e-6): compare to their scale
        scale = np.abs(expected[key].numpy()).max()
        np.testing.assert_allclose(features[key].data, expected[key].numpy(), atol=1e-9 * scale, rtol=1e-7,
                                   err_msg=key)


def separable_parameters(cin, cout):
    """Depthwise 3×3 weights + its BN, pointwise 1×1 weights + its BN (no conv biases)."""
    return 9 * cin + 2 * cin + cin * cout + 2 * cout


def block_parameters(cin, depths, conv_shortcut):
    convs = sum(separable_parameters(a, b) for a, b in zip([cin, *depths[:2]], depths))
    return convs + (cin * depths[2] + 2 * depths[2] if conv_shortcut else 0)


def test_parameter_count(full_size):
    """37.87M, counted by hand from the layout; as TF's xception_65 without logits.

    timm's xception65 (the same aligned Xception-65, as an ImageNet
    classifier) is listed at 40M with its 2048→1000 classifier (2.05M
    parameters). The ~41M often quoted is the whole DeepLab v3+, whose ASPP
    and decoder add about 3M.
    """
    ours, theirs = full_size
    stem = 3 * 32 * 9 + 2 * 32 + 32 * 64 * 9 + 2 * 64
    expected = (stem + block_parameters(64, [128] * 3, True) + block_parameters(128, [256] * 3, True)
                + block_parameters(256, [728] * 3, True) + 16 * block_parameters(728, [728] * 3, False)
                + block_parameters(728, [728, 1024, 1024], True) + block_parameters(1024, [1536, 1536, 2048], False))
    assert expected == 37_867_312
    assert sum(p.data.size for p in ours.parameters()) == expected
    assert sum(p.numel() for p in theirs.parameters()) == expected


def test_attributes_and_registry():
    for package in ("minidl", "reference"):
        model = build_backbone("xception65", 8, package, width_mult=0.5, middle_units=1)
        assert (model.out_channels, model.low_level_channels, model.output_stride) == (1024, 128, 8)
    full = xception65(middle_units=0)
    assert (full.out_channels, full.low_level_channels, full.output_stride) == (2048, 256, 16)


# (stride, rate) of the entry blocks, the middle flow, exit block1, exit block2, per output stride:
# TF's stack_blocks_dense keeps strides until the target is reached; the block that then drops its
# stride still runs at the old rate, and its stride multiplies the rate of every later block.
FLOW_PLAN = {
    32: {"entry": [(2, 1), (2, 1), (2, 1)], "middle": (1, 1), "exit": [(2, 1), (1, 1)]},
    16: {"entry": [(2, 1), (2, 1), (2, 1)], "middle": (1, 1), "exit": [(1, 1), (1, 2)]},
    8: {"entry": [(2, 1), (2, 1), (1, 1)], "middle": (1, 2), "exit": [(1, 2), (1, 4)]},
}


def block_stride_and_rate(block):
    """(stride, rate) of an Xception block, checked to be consistent over its separable convs and shortcut."""
    convs = [getattr(block, f"sepconv{i}").depthwise for i in (1, 2, 3)]
    rates = {conv.dilation for conv in convs}
    assert len(rates) == 1, f"one rate per block, got {rates}"
    assert [conv.stride for conv in convs[:2]] == [(1, 1)] * 2, "only the third separable conv is strided"
    assert all(conv.padding == conv.dilation for conv in convs), "3×3 convs pad by their rate"
    stride = convs[2].stride
    if block.skip == "conv":
        assert block.shortcut.conv.stride == stride
    return stride[0], convs[2].dilation[0]


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_stride_and_rate_of_each_flow(output_stride):
    expected = FLOW_PLAN[output_stride]
    for model in (xception65(output_stride, **NARROW), reference_xception65(output_stride, **NARROW)):
        assert [block_stride_and_rate(b) for b in model.entry_flow] == expected["entry"]
        assert [block_stride_and_rate(b) for b in model.middle_flow] == [expected["middle"]] * NARROW["middle_units"]
        assert [block_stride_and_rate(b) for b in model.exit_flow] == expected["exit"]
        assert model.stem.conv1.stride == (2, 2) and model.stem.conv2.stride == (1, 1)


def test_activation_order():
    """ReLU before each separable conv; the exit flow's last block: depthwise + BN + ReLU, pointwise + BN + ReLU."""
    model = xception65(16, **NARROW)
    assert [name for name, _ in model.middle_flow[0].sepconv1.named_children()] == [
        "relu", "depthwise", "depthwise_bn", "pointwise", "pointwise_bn"]
    assert [name for name, _ in model.exit_flow.block2.sepconv1.named_children()] == [
        "depthwise", "depthwise_bn", "depthwise_relu", "pointwise", "pointwise_bn", "pointwise_relu"]
    assert [b.skip for b in (*model.entry_flow, *model.middle_flow, *model.exit_flow)] == [
        "conv", "conv", "conv", "sum", "conv", "none"]


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("height, width", [(33, 47), (35, 50), (64, 32)])
def test_output_sizes(height, width, output_stride):
    """Each stride-2 conv pads by its rate, so h pixels become ceil(h/2): out is ceil(H/OS), low-level ceil(H/4)."""
    x = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
    options = {"width_mult": 1 / 16, "middle_units": 1}
    with minidl.no_grad():
        ours = xception65(output_stride, **options).eval()(minidl.tensor(x))
    with torch.no_grad():
        theirs = reference_xception65(output_stride, **options).eval()(torch.tensor(x))
    expected = {
        "out": (1, 128, math.ceil(height / output_stride), math.ceil(width / output_stride)),
        "low_level": (1, 16, math.ceil(height / 4), math.ceil(width / 4)),
    }
    for key, shape in expected.items():
        assert ours[key].shape == shape and tuple(theirs[key].shape) == shape, key


def test_bad_inputs():
    model = xception65(16, **NARROW)
    with pytest.raises(ValueError, match=r"input x must be images of shape \(N, 3, H, W\), got shape \(1, 4, 33, 33\)"):
        model(minidl.zeros((1, 4, 33, 33)))
    with pytest.raises(ValueError, match=r"input x .*\(N, 3, H, W\), got shape \(3, 33, 33\)"):
        model(minidl.zeros((3, 33, 33)))
    with pytest.raises(ValueError, match="input x is 15×40, smaller than the network's total stride 16"):
        model(minidl.zeros((1, 3, 15, 40)))
    assert xception65(16, in_channels=1, **NARROW).eval()(minidl.zeros((1, 1, 16, 16)))["out"].shape[2:] == (1, 1)


@pytest.mark.parametrize("options, message", [
    ({"output_stride": 4}, "output_stride must be 8, 16 or 32, got 4"),
    ({"width_mult": 0}, "width_mult must be positive, got 0"),
    ({"middle_units": -1}, "middle_units must be a non-negative integer, got -1"),
    ({"middle_units": 1.5}, "middle_units must be a non-negative integer, got 1.5"),
    ({"in_channels": 0}, "in_channels must be a positive integer, got 0"),
])
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        xception65(**options)
