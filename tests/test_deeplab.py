"""DeepLab v2, v3 and v3+ against their PyTorch twins: outputs and gradients, sizes, the output-stride switch, errors.

Most checks run on a tiny stand-in backbone written once for both frameworks
(four stride-2 convs, the last ones dilated instead past the output stride);
the registry's small backbones are checked through the factories.
"""
import numpy as np
import pytest
import torch
from helpers import check_module

import minidl
import minidl.models
import reference.models

MODELS = ("DeepLabV2", "DeepLabV3", "DeepLabV3Plus")


def models(lib):
    return minidl.models if lib is minidl else reference.models


def conv_bn_relu(lib, in_channels, out_channels, stride, rate):
    return lib.nn.Sequential(
        lib.nn.Conv2d(in_channels, out_channels, 3, stride, padding=rate, dilation=rate, bias=False),
        lib.nn.BatchNorm2d(out_channels),
        lib.nn.ReLU(),
    )


def tiny_backbone(lib, output_stride):
    """Stride 2 four times, then 2 twice more or, past ``output_stride``, rate 2 and 4 instead (as DeepLab does)."""

    class TinyBackbone(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.low = lib.nn.Sequential(conv_bn_relu(lib, 3, 6, 2, 1), conv_bn_relu(lib, 6, 6, 2, 1))  # OS 4
            stride, rate, channels, stages = 4, 1, 6, []
            for width in (8, 10, 12):  # OS 8, 16, 32 when nothing is dilated
                step = 2 if stride < output_stride else 1
                stages.append(conv_bn_relu(lib, channels, width, step, rate))
                stride, rate, channels = stride * step, rate * (2 // step), width  # after a dropped stride: dilate
            self.high = lib.nn.Sequential(*stages)
            self.output_stride, self.low_level_channels, self.out_channels = output_stride, 6, 12

        def forward(self, x):
            low_level = self.low(x)
            return {"low_level": low_level, "out": self.high(low_level)}

    return TinyBackbone()


def tiny_model(lib, name, output_stride=16, **options):
    heads = {} if name == "DeepLabV2" else {"head_channels": 8, "dropout": 0.0}
    return getattr(models(lib), name)(lambda os: tiny_backbone(lib, os), 3, output_stride, **heads, **options)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("output_stride", [8, 16])
def test_models_match_reference(name, output_stride, device):
    check_module(lambda lib: tiny_model(lib, name, output_stride), (2, 3, 33, 33), steps=1, device=device)


def test_dense_v3plus_matches_reference(device):
    check_module(lambda lib: tiny_model(lib, "DeepLabV3Plus", separable=False), (2, 3, 33, 33), steps=1, device=device)


def _loss_gradients(model, lib, images, labels):
    """Every parameter's gradient of the pixel-wise cross-entropy of the model's logits."""
    loss = lib.nn.functional.cross_entropy(model(lib.tensor(images)), lib.tensor(labels), ignore_index=255)
    model.zero_grad()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return float(loss.item()), {k: g.numpy() if lib is torch else g.data for k, g in grads.items()}


def check_loss_gradients(make, images, labels):
    """Cross-entropy and its gradient with respect to every parameter, in train mode, as in PyTorch."""
    torch.manual_seed(0)
    ours, theirs = make(minidl).double(), make(torch).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    loss, grads = _loss_gradients(ours, minidl, images, labels)
    t_loss, t_grads = _loss_gradients(theirs, torch, images, labels)
    assert loss == pytest.approx(t_loss, rel=1e-10)
    assert list(grads) == list(t_grads)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, t_grads[name], atol=1e-10, rtol=1e-7, err_msg=f"gradient of {name}")


def _images_and_labels(shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=(shape[0],) + shape[2:])
    labels[:, :3] = 255  # an ignored border, as VOC's
    return rng.standard_normal(shape), labels


@pytest.mark.parametrize("name", MODELS)
def test_cross_entropy_gradients_match_reference(name):
    check_loss_gradients(lambda lib: tiny_model(lib, name), *_images_and_labels((2, 3, 35, 29), 3))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [(33, 33), (37, 29), (16, 50)])
def test_logits_at_input_resolution(name, size):
    model = tiny_model(minidl, name).eval()
    assert model(minidl.zeros(1, 3, *size)).shape == (1, 3, *size)


@pytest.mark.parametrize("name", MODELS)
def test_output_stride_switch_keeps_weights_and_equals_a_model_built_there(name):
    model = tiny_model(minidl, name, output_stride=16).eval()
    before = model.state_dict()
    images = minidl.randn(1, 3, 33, 33)
    coarse = model.backbone(images)["out"].shape
    model.set_output_stride(8)
    built = tiny_model(minidl, name, output_stride=8).eval()
    built.load_state_dict(before)
    assert list(model.state_dict()) == list(before)
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in before.items())
    assert (coarse, model.backbone(images)["out"].shape) == ((1, 12, 3, 3), (1, 12, 5, 5))
    assert model.output_stride == 8 and model.aspp.rates == built.aspp.rates
    np.testing.assert_array_equal(model(images).data, built(images).data)


def test_output_stride_switch_matches_reference(device):
    def switched(lib):
        return tiny_model(lib, "DeepLabV3", output_stride=16).set_output_stride(8)

    check_module(switched, (2, 3, 33, 33), modes=("eval",), steps=1, device=device)


def test_output_stride_switch_leaves_the_random_stream_alone():
    model = tiny_model(minidl, "DeepLabV3")
    minidl.manual_seed(1)
    expected = minidl.rand(4).data
    minidl.manual_seed(1)
    model.set_output_stride(8)
    np.testing.assert_array_equal(minidl.rand(4).data, expected)


def test_v3_rates_double_at_output_stride_8():
    model = tiny_model(minidl, "DeepLabV3", output_stride=16)
    assert model.aspp.rates == (6, 12, 18)
    assert model.set_output_stride(8).aspp.rates == (12, 24, 36)
    assert model.set_output_stride(32).aspp.rates == (3, 6, 9)
    assert tiny_model(minidl, "DeepLabV2", output_stride=8).aspp.rates == (6, 12, 18, 24)


@pytest.mark.parametrize("name, rates, output_stride, at_8, at_16", [
    ("DeepLabV2", (12,), 8, (12,), (6,)),  # v2's LargeFOV: one branch
    ("DeepLabV3", (2, 4, 6), 16, (4, 8, 12), (2, 4, 6)),
    ("DeepLabV3Plus", (1, 3), 8, (1, 3), (1, 2)),  # 1.5 rounds half up
])
def test_chosen_atrous_rates_hold_at_the_stride_built_and_scale_with_it(name, rates, output_stride, at_8, at_16):
    model = tiny_model(minidl, name, output_stride=output_stride, atrous_rates=list(rates))  # a JSON list is fine
    assert model.aspp.rates == rates
    assert model.set_output_stride(8).aspp.rates == at_8
    assert model.set_output_stride(16).aspp.rates == at_16


@pytest.mark.parametrize("name", MODELS)
def test_chosen_atrous_rates_match_reference(name, device):
    check_module(lambda lib: tiny_model(lib, name, output_stride=8, atrous_rates=(1, 3)), (2, 3, 33, 33),
                 modes=("train",), steps=1, device=device)


@pytest.mark.parametrize("rates", [(), (0, 2), (1.5,), "6"])
def test_bad_atrous_rates_are_refused_by_name(rates):
    with pytest.raises(ValueError, match="atrous_rates"):
        tiny_model(minidl, "DeepLabV3", atrous_rates=rates)


def test_factories_take_atrous_rates():
    model = minidl.models.deeplabv2("resnet_small", num_classes=3, atrous_rates=(12,))
    assert model.aspp.rates == (12,) and len(model.aspp.branches) == 1


def _field_of_view(backbone, size=65):
    """How many input rows the centre feature pixel sees: the extent of its gradient in the image.

    With positive weights and images every ReLU passes, so the extent is the
    whole theoretical receptive field.
    """
    for p in backbone.parameters():
        p.data = np.abs(p.data)
    images = minidl.rand(1, 3, size, size, requires_grad=True)
    features = backbone(images)["out"]
    centre = features.shape[-1] // 2
    features[0, :, centre, centre].sum().backward()
    rows = np.nonzero(np.abs(images.grad.data[0]).sum(axis=(0, 2)))[0]
    return rows.max() - rows.min() + 1


def test_output_stride_switch_keeps_the_field_of_view():
    """Dilation instead of stride: the same pixels seen on a grid twice as dense.

    Each 3×3 conv adds its tap spacing in input pixels on each side: 1 + 2 + 4 + 8 + 16 = 31, so 63 rows.
    """
    model = tiny_model(minidl, "DeepLabV3", output_stride=16).eval()
    assert _field_of_view(model.backbone) == 63
    model.set_output_stride(8)
    assert _field_of_view(model.backbone) == 63


def test_v3_classifier_is_one_conv():
    model = tiny_model(minidl, "DeepLabV3")
    assert isinstance(model.classifier, minidl.nn.Conv2d) and model.classifier.kernel_size == (1, 1)
    assert [name for name, _ in model.named_children()] == ["backbone", "aspp", "classifier"]
    assert [name for name, _ in tiny_model(minidl, "DeepLabV3Plus").named_children()] == ["backbone", "aspp", "decoder"]


def test_wrong_input_channels_named():
    model = tiny_model(minidl, "DeepLabV3")
    with pytest.raises(ValueError, match=r"images of shape \(N, 3, H, W\), got shape \(2, 4, 33, 33\) \(4 channels\)"):
        model(minidl.zeros(2, 4, 33, 33))


def test_input_smaller_than_output_stride_named():
    model = tiny_model(minidl, "DeepLabV3Plus", output_stride=16)
    with pytest.raises(ValueError, match=r"input x is 33×15, smaller than the network's total stride 16"):
        model(minidl.zeros(2, 3, 33, 15))


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet7'; known backbones: .*resnet101.*xception65"):
        minidl.models.deeplabv3("resnet7")


def test_multi_grid_refused_for_backbones_without_it():
    with pytest.raises(ValueError, match="multi_grid applies to ResNet backbones .*'xception65' has no multi-grid"):
        minidl.models.deeplabv3("xception65", multi_grid=(1, 2, 4))


def test_switch_refused_when_the_backbone_changes_shape():
    model = tiny_model(minidl, "DeepLabV2")
    model.make_backbone = lambda os: minidl.nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="modules or weight shapes differ"):
        model.set_output_stride(16)


SMALL = {"num_classes": 3, "head_channels": 8, "dropout": 0.0}
FACTORY_CASES = [  # (factory, options): the registry's small backbones, narrowed further for speed
    ("deeplabv2", {"backbone": "resnet_small", "num_classes": 3}),
    ("deeplabv2", {"backbone": "vgg16", "num_classes": 3, "width": 4}),
    ("deeplabv3", {"backbone": "resnet_small", **SMALL}),
    ("deeplabv3", {"backbone": "mobilenetv2_small", "separable": True, "image_pooling": False, **SMALL}),
    ("deeplabv3plus", {"backbone": "mobilenetv2_small", "image_pooling": False, **SMALL}),
    ("deeplabv3plus", {"backbone": "resnet_small", "width": 4, **SMALL}),
    ("deeplabv3plus", {"backbone": "mobilenetv2_small", **SMALL}),
    ("deeplabv3plus", {"backbone": "xception65", "width_mult": 1 / 32, "middle_units": 1, **SMALL}),
]


def factory(lib, name, **options):
    return getattr(models(lib), name)(**options)


@pytest.mark.parametrize("name, options", FACTORY_CASES)
def test_factories_match_reference(name, options, device):
    check_module(lambda lib: factory(lib, name, **options), (2, 3, 33, 33), steps=1, device=device)


def test_cross_entropy_gradients_through_resnet_match_reference():
    make = lambda lib: factory(lib, "deeplabv3", backbone="resnet_small", width=8, **SMALL)  # noqa: E731
    check_loss_gradients(make, *_images_and_labels((2, 3, 33, 35), 3))


@pytest.mark.parametrize("name, options", FACTORY_CASES[2:])
def test_registry_backbones_switch_output_stride_in_place(name, options):
    model = factory(minidl, name, output_stride=16, **options).eval()
    weights = model.state_dict()
    model.set_output_stride(8)
    built = factory(minidl, name, output_stride=8, **options).eval()
    built.load_state_dict(weights)
    images = minidl.randn(1, 3, 33, 33)
    assert model.backbone(images)["out"].shape[-2:] == (5, 5)
    np.testing.assert_array_equal(model(images).data, built(images).data)


def test_multi_grid_reaches_the_resnet():
    model = minidl.models.deeplabv3("resnet_small", multi_grid=(3,), **SMALL)
    rates = [m.dilation[0] for name, m in model.backbone.named_modules() if name.startswith("layer4") and
             isinstance(m, minidl.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert rates == [6, 6]  # layer4 is one unit (a BasicBlock, two 3×3 convs) at OS 16: rate 2 × unit rate 3
