"""Checkpoints: round trips, atomic writes, errors for missing, truncated and foreign files, PyTorch conversion."""
import json
import math
import os
import pickle
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

import minidl
import minidl.io as io
import minidl.models


def small_net(lib):
    nn = lib.nn
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def test_module_round_trip(tmp_path):
    model = small_net(minidl)
    model(minidl.randn(2, 3, 5, 5))  # a training step moves the BN statistics and counter
    io.save(model, tmp_path / "model.npz")
    state = io.load(tmp_path / "model.npz")
    assert list(state) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert state[key].dtype == value.dtype and np.array_equal(state[key], value), key
    restored = small_net(minidl)
    restored.load_state_dict(state)
    x = minidl.randn(1, 3, 5, 5)
    np.testing.assert_array_equal(restored.eval()(x).data, model.eval()(x).data)


def test_training_checkpoint_round_trip(tmp_path):
    model = small_net(minidl)
    optimizer = minidl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model(minidl.randn(2, 3, 5, 5)).sum().backward()
    optimizer.step()
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": 1000,
                  "notes": {"loss": float("nan"), "best": None, "scale": np.float32(0.5), "sizes": (33, 33),
                            "rates": [6, 12, 18], "ok": True, "name": "v3 résumé"}}
    io.save(checkpoint, tmp_path / "checkpoint.npz")
    loaded = io.load(tmp_path / "checkpoint.npz")
    assert loaded["iteration"] == 1000 and loaded["notes"]["best"] is None and loaded["notes"]["ok"] is True
    assert math.isnan(loaded["notes"]["loss"]) and loaded["notes"]["name"] == "v3 résumé"
    assert type(loaded["notes"]["scale"]) is np.float32 and loaded["notes"]["scale"] == 0.5
    assert loaded["notes"]["sizes"] == (33, 33) and loaded["notes"]["rates"] == [6, 12, 18]
    assert list(loaded["optimizer"]["state"]) == list(checkpoint["optimizer"]["state"])  # integer keys stay integers
    resumed = minidl.optim.SGD(small_net(minidl).parameters(), lr=0.5)
    resumed.load_state_dict(loaded["optimizer"])
    assert resumed.param_groups[0]["lr"] == 0.1 and resumed.param_groups[0]["momentum"] == 0.9
    for saved, restored in zip(optimizer.state.values(), resumed.state.values()):
        np.testing.assert_array_equal(saved["momentum_buffer"], restored["momentum_buffer"])


def test_arrays_readable_with_numpy_alone(tmp_path):
    io.save({"w": np.arange(6.0).reshape(2, 3)}, tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["0", io.MANIFEST]
        np.testing.assert_array_equal(archive["0"], np.arange(6.0).reshape(2, 3))


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    io.save({"w": np.ones(3)}, path)

    def half_written(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_written)
    with pytest.raises(OSError, match="disk full"):
        io.save({"w": np.zeros(3)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(io.load(path)["w"], np.ones(3))  # the old checkpoint, whole
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def test_save_syncs_the_file_then_the_directory(tmp_path, monkeypatch):
    synced, real_fsync = [], os.fsync

    def recording_fsync(fd):
        synced.append("directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    io.save({"w": np.ones(3)}, tmp_path / "model.npz")
    assert synced == ["file", "directory"]
    assert os.listdir(tmp_path) == ["model.npz"]


def test_missing_file_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file.*nowhere.npz"):
        io.load(tmp_path / "nowhere.npz")


def test_truncated_file_named(tmp_path):
    path = tmp_path / "cut.npz"
    io.save(small_net(minidl), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.CheckpointError, match=f"{path} is truncated or corrupted"):
        io.load(path)


class _Marker:
    """Unpickling this would create a file: what a hostile checkpoint could do if it were unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("write, reason", [
    (lambda file: None, "it is empty"),
    (lambda file: file.write(b"not weights"), "not a NumPy .npz"),
    (lambda file: np.save(file, np.ones(3)), "not a NumPy .npz"),
    (lambda file: pickle.dump(_Marker(file.name + ".pwned"), file), "not a NumPy .npz"),
    (lambda file: np.savez(file, weights=np.ones(3)), "has no __minidl_manifest__ entry"),
    (lambda file: torch.save(torch.nn.Conv2d(1, 1, 1).state_dict(), file), "a PyTorch file"),
])
def test_foreign_file_named_and_never_executed(tmp_path, write, reason):
    path = tmp_path / "foreign.bin"
    with open(path, "wb") as file:
        write(file)
    with pytest.raises(io.CheckpointError, match=f"{path} is .*{reason}"):
        io.load(path)
    assert not os.path.exists(str(path) + ".pwned")


def test_pickled_array_inside_a_checkpoint_is_never_unpickled(tmp_path):
    path = tmp_path / "hostile.npz"
    manifest = {"format": io.FORMAT, "version": io.VERSION, "tree": {"array": "0"}}
    hostile = np.array([_Marker(str(path) + ".pwned")], dtype=object)
    with open(path, "wb") as file:
        np.savez(file, **{"0": hostile, io.MANIFEST: np.array(json.dumps(manifest))})
    with pytest.raises(io.CheckpointError, match="Object arrays cannot be loaded"):
        io.load(path)
    assert not os.path.exists(str(path) + ".pwned")


def test_unsupported_value_named():
    with pytest.raises(TypeError, match=r"cannot store a value of type object at \['optimizer'\]\['hook'\]"):
        io.save({"optimizer": {"hook": object()}}, "unused.npz")


def test_checkpoint_of_another_architecture_lists_the_keys(tmp_path):
    small = {"num_classes": 3, "head_channels": 8, "width": 4}
    io.save(minidl.models.deeplabv3("resnet_small", **small), tmp_path / "v3.npz")
    v3plus = minidl.models.deeplabv3plus("resnet_small", **small)
    with pytest.raises(RuntimeError) as error:
        v3plus.load_state_dict(io.load(tmp_path / "v3.npz"))
    missing, unexpected = str(error.value).split("\n\t")[1:]
    assert missing.startswith("Missing key(s)") and unexpected.startswith("Unexpected key(s)")
    assert '"decoder.low_level.0.weight"' in missing and '"aspp.convs.1.depthwise.weight"' in missing
    assert '"classifier.weight"' in unexpected and '"aspp.convs.1.0.weight"' in unexpected  # dense v3 branches


def test_torch_state_dict_into_minidl():
    torch_model = small_net(torch).double().eval()
    state = io.from_torch_state_dict(torch_model.state_dict())
    assert all(type(v) is np.ndarray for v in state.values())
    model = small_net(minidl).double().eval()
    model.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 5))
    np.testing.assert_allclose(model(minidl.tensor(x)).data, torch_model(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    with torch.no_grad():
        torch_model[0].weight.zero_()
    assert np.any(state["0.weight"] != 0)  # a copy, not a view of torch's memory


def test_minidl_state_dict_into_torch():
    model = small_net(minidl).eval()
    torch_model = small_net(torch).eval()
    torch_model.load_state_dict(io.to_torch_state_dict(model, torch.from_numpy))
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(torch_model(torch.tensor(x)).detach().numpy(), model(minidl.tensor(x)).data, rtol=1e-5,
                               atol=1e-6)
    arrays = io.to_torch_state_dict(model.state_dict())
    assert all(type(v) is np.ndarray and v.flags.c_contiguous for v in arrays.values())


def test_torch_checkpoint_wrapper_refused_with_a_hint():
    with pytest.raises(TypeError, match="the value of 'model' is of type OrderedDict.*checkpoint\\['model'\\]"):
        io.from_torch_state_dict({"model": torch.nn.Conv2d(1, 1, 1).state_dict()})


def test_minidl_side_never_imports_torch(tmp_path):
    script = (
        "import sys, minidl.io, minidl.models\n"
        "model = minidl.models.deeplabv3plus('resnet_small', num_classes=3, head_channels=8, width=4)\n"
        f"minidl.io.save(model, {str(tmp_path / 'm.npz')!r})\n"
        f"model.load_state_dict(minidl.io.from_torch_state_dict(minidl.io.load({str(tmp_path / 'm.npz')!r})))\n"
        "print(minidl.models.summary(model, (3, 33, 33)).macs > 0, 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False"]
