"""torchvision's DeepLabV3 rebuilt in minidl: its keys, its outputs, and a lossless weight round trip.

torchvision does not import beside this project's torch, so the facts about
it live in tests/data/torchvision_deeplabv3_keys.json, written by the real
torchvision (0.29.1 on torch 2.14.1) in a separate environment by running this
file as a script (see ``GENERATE`` below): every state_dict key and shape of
``deeplabv3_resnet50`` and ``deeplabv3_resnet101`` (aux_loss=True), and the
resnet50 model's outputs for a fixed input under fixed weights
(``deterministic_weights``, plain NumPy, so the tests rebuild them exactly).
"""
import json
import re
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import check_module

import minidl
from minidl.models import torchvision_compat as ours
from reference.models import torchvision_compat as theirs

MANIFEST = Path(__file__).parent / "data" / "torchvision_deeplabv3_keys.json"
GENERATE = ("python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 pytest && "
            "PYTHONPATH=.:tests /tmp/tvenv/bin/python tests/test_torchvision_compat.py  (from the repository root)")
WEIGHTS = ("deterministic_weights() in tests/test_torchvision_compat.py: the i-th state_dict entry (in "
           "torchvision's order) draws u = numpy.random.default_rng(i).random(shape); conv weights "
           "(2u-1)*sqrt(3/fan_in), BN weights and running_var 0.5+u, biases and running_mean 0.2*(2u-1), "
           "num_batches_tracked 0; the model in float64, eval mode")
INPUT_SHAPE = (1, 3, 33, 41)
INPUT = f"2*numpy.random.default_rng(2024).random({INPUT_SHAPE}) - 1, float64"
SAMPLED = "class_means: mean over pixels of each class's logit; every_8th_pixel: logits[0, :, ::8, ::8]"
BUILDERS = ("deeplabv3_resnet50", "deeplabv3_resnet101")


def deterministic_weights(shapes):
    """{key: array} for state_dict ``shapes`` (an ordered {key: shape}), the same in every framework.

    Uniform numbers from a generator seeded by the key's position, shaped as
    in a trained network: convs keep the activations' variance (variance
    1/fan_in), BN is near the identity with running statistics of the right
    size, so the logits of a 100-layer network stay finite and informative.
    """
    state = {}
    for i, (key, shape) in enumerate(shapes.items()):
        u = np.random.default_rng(i).random(shape)
        if key.endswith("num_batches_tracked"):
            state[key] = np.zeros(shape, np.int64)
        elif len(shape) > 1:
            state[key] = (2 * u - 1) * np.sqrt(3 / np.prod(shape[1:]))
        elif key.endswith(("running_var", "weight")):
            state[key] = 0.5 + u
        else:
            state[key] = 0.2 * (2 * u - 1)
    return state


def fixed_input():
    return 2 * np.random.default_rng(2024).random(INPUT_SHAPE) - 1


def sampled(logits):
    """What the manifest keeps of an (N, C, H, W) logit map: per-class means and a sparse grid of pixels."""
    return {"class_means": logits.mean(axis=(0, 2, 3)).tolist(), "every_8th_pixel": logits[0, :, ::8, ::8].tolist()}


@pytest.fixture(scope="module")
def manifest():
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="module")
def untrained():
    return ours.deeplabv3_resnet50()


def keys_and_shapes(model):
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("module", [ours, theirs], ids=["minidl", "reference"])
def test_keys_and_shapes_are_torchvisions(manifest, module, builder):
    model = getattr(module, builder)(num_classes=21, aux_loss=True)
    assert keys_and_shapes(model) == list(manifest[builder].items())


@pytest.mark.parametrize("module", [ours, theirs], ids=["minidl", "reference"])
def test_without_aux_and_with_other_classes(manifest, module):
    """aux_loss=False drops aux_classifier.* (and nothing else); num_classes sets the classifier's width."""
    expected = [(k, [3, 256, 1, 1] if k == "classifier.4.weight" else [3] if k == "classifier.4.bias" else shape)
                for k, shape in manifest["deeplabv3_resnet50"].items() if not k.startswith("aux_classifier.")]
    model = module.deeplabv3_resnet50(num_classes=3)
    assert model.aux_classifier is None
    assert keys_and_shapes(model) == expected


@pytest.mark.parametrize("module, lib", [(ours, minidl), (theirs, torch)], ids=["minidl", "reference"])
def test_outputs_match_torchvision(manifest, module, lib):
    """Under the same weights, on the same input, the same logits as the real torchvision (eval, float64)."""
    model = module.deeplabv3_resnet50(num_classes=21, aux_loss=True).double().eval()
    weights = deterministic_weights(manifest["deeplabv3_resnet50"])
    model.load_state_dict({k: lib.tensor(v) for k, v in weights.items()})
    with lib.no_grad():
        result = model(lib.tensor(fixed_input()))
    assert isinstance(result, OrderedDict) and list(result) == ["out", "aux"]
    for name, expected in manifest["outputs"]["deeplabv3_resnet50"].items():
        logits = np.asarray(result[name].detach().numpy() if lib is torch else result[name].data)
        assert logits.shape == (INPUT_SHAPE[0], 21) + INPUT_SHAPE[2:]
        for what, values in sampled(logits).items():
            np.testing.assert_allclose(values, expected[what], rtol=1e-9, atol=1e-9, err_msg=f"{name}: {what}")


def both_heads(lib):
    """deeplabv3_resnet50 with aux_loss, for check_module: "out" and "aux" flattened into one tensor.

    Dropout's masks come from each framework's own random generator, so train
    mode can only agree with p = 0; eval mode runs the heads as they are.
    """
    module = ours if lib is minidl else theirs

    class BothHeads(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = module.deeplabv3_resnet50(num_classes=21, aux_loss=True)
            for m in self.model.modules():
                if isinstance(m, lib.nn.Dropout):
                    m.p = 0.0

        def forward(self, x):
            result = self.model(x)
            return lib.cat([result["out"].flatten(1), result["aux"].flatten(1)], 1)

    return BothHeads()


def test_parity_with_reference():
    """Full width (about 40M weights), batch 2 (image pooling's BN needs two values per channel), one step each."""
    check_module(both_heads, (2, 3, 33, 33), modes=("eval", "train"), steps=1, atol=1e-8)


def test_state_dict_round_trip_is_bit_identical():
    """minidl → PyTorch tensors → the reference model → back into another minidl model: not one bit changes."""
    source = ours.deeplabv3_resnet50(aux_loss=True)
    middle = theirs.deeplabv3_resnet50(aux_loss=True)
    middle.load_state_dict({k: torch.tensor(v) for k, v in source.state_dict().items()})
    target = ours.deeplabv3_resnet50(aux_loss=True)
    assert not np.array_equal(target.state_dict()["classifier.4.weight"], source.state_dict()["classifier.4.weight"])
    target.load_state_dict({k: v.numpy() for k, v in middle.state_dict().items()})
    returned = target.state_dict()
    for key, original in source.state_dict().items():
        assert original.dtype == returned[key].dtype and np.array_equal(original, returned[key]), key


@pytest.mark.parametrize("shape, message", [
    ((2, 1, 33, 33), r"\(N, 3, H, W\).*1 channels"),
    ((1, 3, 33, 7), r"33×7, smaller than the network's total stride 8"),
])
def test_bad_input_is_refused_clearly(untrained, shape, message):
    with pytest.raises(ValueError, match=message):
        untrained(minidl.zeros(shape))


def generate():
    """Write the manifest from the real torchvision (run in its own environment, see GENERATE)."""
    import torchvision
    from torchvision.models import segmentation

    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    data = {"_generated_by": GENERATE, "_versions": versions,
            "_weights": WEIGHTS, "_input": INPUT, "_sampled": SAMPLED}
    models = {}
    for builder in BUILDERS:
        models[builder] = getattr(segmentation, builder)(weights=None, weights_backbone=None, num_classes=21,
                                                          aux_loss=True)
        data[builder] = {k: list(v.shape) for k, v in models[builder].state_dict().items()}
    model = models["deeplabv3_resnet50"].double().eval()
    model.load_state_dict({k: torch.tensor(v) for k, v in deterministic_weights(data["deeplabv3_resnet50"]).items()})
    with torch.no_grad():
        result = model(torch.tensor(fixed_input()))
    data["outputs"] = {"deeplabv3_resnet50": {name: sampled(v.numpy()) for name, v in result.items()}}
    MANIFEST.parent.mkdir(exist_ok=True)
    innermost_list = re.compile(r"\[\s+([^\[\]]*?)\s+\]")  # one line per key, one line per row of numbers
    text = innermost_list.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", json.dumps(data, indent=1))
    MANIFEST.write_text(text + "\n")
    print(f"wrote {MANIFEST} with torch {torch.__version__}, torchvision {torchvision.__version__}", file=sys.stderr)


if __name__ == "__main__":
    generate()
