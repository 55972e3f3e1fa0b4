"""The DeepLab heads against their PyTorch twins: v2's ASPP-L, v3's ASPP (dense and separable), v3+'s decoder."""
import numpy as np
import pytest
import torch
from helpers import check_module

import minidl
import minidl.models
import reference.models
from minidl.models.aspp import scaled_rates


def models(lib):
    return minidl.models if lib is minidl else reference.models


@pytest.mark.parametrize("rates", [(6, 12, 18, 24), (3, 6, 9, 12)])  # OS 8 (the paper's) and OS 16
def test_aspp_v2_matches_reference(rates, device):
    check_module(lambda lib: models(lib).ASPPv2(8, 5, rates), (2, 8, 9, 7), device=device)


@pytest.mark.parametrize(
    "rates, separable",
    [((6, 12, 18), False), ((12, 24, 36), False), ((6, 12, 18), True), ((2, 3, 4), True)],  # OS 16, OS 8, v3+
)
def test_aspp_matches_reference(rates, separable, device):
    # batch 2 in train mode: the pooled branch's BN needs more than one value per channel
    check_module(lambda lib: models(lib).ASPP(8, 6, rates, separable, dropout=0.0), (2, 8, 5, 7), device=device)


@pytest.mark.parametrize("separable", [False, True])
def test_aspp_without_image_pooling_matches_reference(separable, device):
    check_module(lambda lib: models(lib).ASPP(8, 6, (2, 3, 4), separable, dropout=0.0, image_pooling=False),
                 (2, 8, 5, 7), device=device)


def test_aspp_without_image_pooling_has_four_branches_and_keeps_its_rates():
    aspp = minidl.models.ASPP(4, 6, (6, 12, 18), image_pooling=False)
    assert len(aspp.convs) == 4 and aspp.project[0].in_channels == 4 * 6
    assert not any(isinstance(m, minidl.nn.AdaptiveAvgPool2d) for m in aspp.modules())
    aspp.set_rates((12, 24, 36))
    assert aspp.rates == (12, 24, 36)
    aspp(minidl.randn(1, 4, 3, 3))  # no pooled branch, so a batch of one trains


def test_aspp_dropout_is_identity_in_eval(device):
    check_module(lambda lib: models(lib).ASPP(4, 6, dropout=0.5), (1, 4, 3, 3), modes=("eval",), device=device)


def _decoder_after_stride_4_encoder(lib, separable):
    """The decoder fed by a stride-4 conv standing in for the encoder, so that one input drives both paths."""

    class EncoderDecoder(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = lib.nn.Conv2d(6, 16, 3, stride=4, padding=1)
            self.decoder = models(lib).Decoder(6, 16, 5, low_level_out=4, channels=8, separable=separable)

        def forward(self, x):
            return self.decoder(x, self.encoder(x))

    return EncoderDecoder()


@pytest.mark.parametrize("separable", [True, False])
def test_decoder_matches_reference(separable, device):
    check_module(lambda lib: _decoder_after_stride_4_encoder(lib, separable), (2, 6, 9, 11), device=device)


def test_decoder_scores_at_low_level_size():
    decoder = minidl.models.Decoder(6, 16, 5, low_level_out=4, channels=8)
    out = decoder(minidl.randn(2, 6, 9, 11), minidl.randn(2, 16, 3, 3))
    assert out.shape == (2, 5, 9, 11)


def test_aspp_pooling_needs_two_images_in_training():
    for lib, error in ((minidl, ValueError), (torch, ValueError)):
        aspp = models(lib).ASPP(4, 6)
        with pytest.raises(error, match="more than 1 value per channel"):
            aspp(lib.randn(1, 4, 3, 3))


def test_rates_scale_with_output_stride():
    assert scaled_rates((6, 12, 18), 16, 8) == (12, 24, 36)  # v3: "doubled when output_stride = 8"
    assert scaled_rates((6, 12, 18), 16, 32) == (3, 6, 9)
    assert scaled_rates((6, 12, 18, 24), 8, 16) == (3, 6, 9, 12)
    assert scaled_rates((6, 12, 18, 24), 8, 32) == (2, 3, 5, 6)  # 1.5 and 4.5 rounded up


@pytest.mark.parametrize("build", [
    lambda rates=(6, 12, 18): minidl.models.ASPP(4, 6, rates, dropout=0.0),
    lambda rates=(6, 12, 18): minidl.models.ASPP(4, 6, rates, separable=True, dropout=0.0),
    lambda rates=(6, 12, 18, 24): minidl.models.ASPPv2(4, 3, rates),
])
def test_set_rates_equals_building_at_those_rates(build):
    head = build()
    before = head.state_dict()
    doubled = tuple(2 * r for r in head.rates)
    head.set_rates(doubled)
    built = build(doubled)
    built.load_state_dict(before)
    assert head.rates == doubled
    assert all(np.array_equal(v, head.state_dict()[k]) for k, v in before.items())
    x = minidl.randn(2, 4, 7, 5)
    np.testing.assert_array_equal(head.eval()(x).data, built.eval()(x).data)


def test_set_rates_needs_one_rate_per_branch():
    with pytest.raises(ValueError, match="expected 3 atrous rates"):
        minidl.models.ASPP(4, 6).set_rates((12, 24))


def _batch_norm_keys(prefix):
    return [prefix + k for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def test_aspp_keys_are_torchvisions():
    # the state_dict of torchvision.models.segmentation.deeplabv3.ASPP(8, [6, 12, 18], 4), in order
    expected = []
    for i in range(4):  # 1×1 and three atrous: Sequential(conv, bn, relu)
        expected += [f"convs.{i}.0.weight", *_batch_norm_keys(f"convs.{i}.1.")]
    expected += ["convs.4.1.weight", *_batch_norm_keys("convs.4.2.")]  # pooling: (pool, conv, bn, relu)
    expected += ["project.0.weight", *_batch_norm_keys("project.1.")]
    assert list(minidl.models.ASPP(8, 4).state_dict()) == expected


def test_aspp_v2_starts_as_the_paper():
    head = minidl.models.ASPPv2(64, 21)
    for conv in head.branches:
        assert np.all(conv.bias.data == 0)
        assert abs(conv.weight.data.std() - 0.01) < 0.001  # 12096 draws of N(0, 0.01)
