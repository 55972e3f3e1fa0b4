"""Multi-scale, flipped, padded inference against the same procedure written in PyTorch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import minidl
from minidl.inference import multi_scale_predict, predict, predict_labels


def tiny_net(lib):
    """A small fully convolutional net with stride 2 and a bilinear upsampling back to the input size."""
    nn = lib.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=2, dilation=2))

        def forward(self, x):
            logits = self.body(x)
            return lib.nn.functional.interpolate(logits, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)

    return Net()


def torch_multi_scale(model, images, scales, flip, fusion, stride):
    """The procedure of DeepLab's papers written directly in PyTorch, as the expected result."""
    h, w = images.shape[2:]
    outputs = []
    with torch.no_grad():
        for s in scales:
            x = images if s == 1 else TF.interpolate(images, size=(max(1, round(h * s)), max(1, round(w * s))),
                                                     mode="bilinear", align_corners=False)
            for mirrored in (False, True) if flip else (False,):
                xi = torch.flip(x, [3]) if mirrored else x
                sh, sw = xi.shape[2:]
                if stride:
                    xi = TF.pad(xi, (0, -sw % stride, 0, -sh % stride))
                logits = model(xi)[:, :, :sh, :sw]
                logits = torch.flip(logits, [3]) if mirrored else logits
                logits = TF.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                outputs.append(logits if fusion == "max" else logits.softmax(1))
    stacked = torch.stack(outputs)
    return stacked.amax(0).softmax(1) if fusion == "max" else stacked.mean(0)


@pytest.fixture
def nets():
    torch.manual_seed(0)
    theirs = tiny_net(torch).double()
    ours = tiny_net(minidl).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("scales, flip, fusion, stride", [
    ((1.0,), False, "mean", None),
    ((1.0, 0.75, 0.5), False, "max", None),  # DeepLab v2
    ((0.5, 0.75, 1.0, 1.25, 1.5), True, "mean", None),  # DeepLab v3
    ((1.0, 0.6), True, "max", 4),  # padded to a multiple of 4
])
def test_multi_scale_matches_torch(nets, scales, flip, fusion, stride, device):
    ours, theirs = nets
    ours.to(device)
    images = np.random.default_rng(1).standard_normal((2, 3, 13, 11))
    expected = torch_multi_scale(theirs, torch.tensor(images), scales, flip, fusion, stride).numpy()
    got = multi_scale_predict(ours, minidl.tensor(images, device=device), scales=scales, flip=flip, fusion=fusion,
                              stride=stride)
    assert got.device == device
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(got.numpy().sum(1), 1.0, atol=1e-10)  # probabilities


def test_predict_pads_to_the_stride_and_crops_back(nets):
    ours, _ = nets
    images = minidl.tensor(np.random.default_rng(2).standard_normal((1, 3, 9, 7)))
    assert predict(ours, images, stride=8).shape == (1, 4, 9, 7)


def test_predict_labels_restores_training_mode(nets):
    ours, _ = nets
    ours.train()
    labels = predict_labels(ours, np.zeros((1, 3, 8, 8)), scales=(1.0, 0.5), flip=True)
    assert labels.shape == (1, 8, 8) and labels.dtype.kind == "i"
    assert ours.training


def test_bad_arguments(nets):
    ours, _ = nets
    with pytest.raises(ValueError, match="fusion must be one of"):
        multi_scale_predict(ours, np.zeros((1, 3, 8, 8)), fusion="median")
    with pytest.raises(ValueError, match="scales must be positive"):
        multi_scale_predict(ours, np.zeros((1, 3, 8, 8)), scales=(1.0, 0))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        predict(ours, np.zeros((3, 8, 8)))
