"""Device 'cuda' beyond the op-parity tests: the kernels' fallback, GPUs other than the first, random
numbers, launches without host waits, and the library's CPU-only corners on CuPy arrays.

These run on the CuPy stand-in (tests/standin_cupy.py) by default and on a real GPU with
MINIDL_TEST_CUDA=cupy (benchmarks/gpu.sh). The parity tests of every op, layer and model, training with
resume and multi-scale evaluation run on 'cuda' too, through their ``device`` parameter.
"""
import importlib
import importlib.abc
import os
import subprocess
import sys

import numpy as np
import pytest
import standin_cupy
from helpers import Const, check_op

import minidl
import minidl.nn.functional as F
from minidl import backend, kernels
from minidl.crf import dense_crf
from minidl.data import DataLoader, RandomScale, SyntheticSegmentation, train_transform
from minidl.metrics import SegmentationMetrics

on_standin = pytest.mark.skipif(sys.modules.get("cupy") is not standin_cupy,
                                reason="needs the CuPy stand-in (its two GPUs, its counters)")

# One case per op family that has CUDA kernels or CuPy-specific array code.
OPS = {
    "conv2d": ([(2, 3, 7, 6), (4, 3, 3, 3), (4,)], lambda lib, x, w, b: lib.nn.functional.conv2d(
        x, w, b, stride=2, padding=2, dilation=2)),
    "depthwise": ([(2, 3, 6, 6), (3, 1, 3, 3)], lambda lib, x, w: lib.nn.functional.conv2d(
        x, w, padding=2, dilation=2, groups=3)),
    "bilinear": ([(2, 3, 5, 4)], lambda lib, x: lib.nn.functional.interpolate(
        x, size=(9, 7), mode="bilinear", align_corners=False)),
    "batch_norm": ([(4, 3, 5, 5), (3,), (3,)], lambda lib, x, w, b: lib.nn.functional.batch_norm(
        x, None, None, w, b, training=True)),
    "max_pool": ([(2, 3, 7, 7)], lambda lib, x: lib.nn.functional.max_pool2d(x, 3, stride=2, padding=1)),
    "cross_entropy": ([(2, 4, 3, 3), Const(np.array([[[0, 1, 255], [3, 2, 1], [0, 0, 255]]] * 2))],
                      lambda lib, x, t: lib.nn.functional.cross_entropy(x, t, ignore_index=255)),
    "pow": ([(3, 4)], lambda lib, x: 2.0 ** x + x ** 2 + x.abs() ** 0.5),
}


def _cuda_kernels(topic):
    """minidl.kernels.cuda.<topic>, or a skip where Numba's CUDA target itself does not import."""
    try:
        return importlib.import_module(f"minidl.kernels.cuda.{topic}")
    except Exception as e:  # e.g. numba-cuda 0.30.4 beside NumPy 2.5: an AttributeError
        pytest.skip(f"Numba's CUDA target does not import here ({type(e).__name__}: {e})")


@pytest.fixture
def fresh_kernels():
    """Forget whether the CUDA kernels failed before, and forget it again afterwards."""
    kernels._forget_cuda_failure()
    yield
    kernels._forget_cuda_failure()


class _BrokenNumbaCuda(importlib.abc.MetaPathFinder):
    """Makes ``import numba.cuda`` fail as numba-cuda 0.30.4 does beside NumPy 2.5."""

    def find_spec(self, name, path, target=None):
        if name == "numba.cuda" or name.startswith("numba.cuda."):
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")
        return None


@pytest.mark.parametrize("op", OPS)
def test_every_op_matches_torch_when_numba_cuda_cannot_be_imported(op, fresh_kernels, monkeypatch, recwarn):
    import numba

    for name in [m for m in sys.modules if m.startswith(("numba.cuda", "minidl.kernels.cuda"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(numba, "cuda", raising=False)  # else `from numba import cuda` finds it there
    monkeypatch.setattr(sys, "meta_path", [_BrokenNumbaCuda()] + sys.meta_path)
    inputs, fn = OPS[op]
    check_op(inputs, fn, device="cuda", gradcheck=False)
    check_op(inputs, fn, device="cuda", gradcheck=False)  # a second time: no second warning
    warned = [w for w in recwarn if issubclass(w.category, kernels.KernelsUnavailableWarning)]
    if op in ("conv2d", "depthwise", "bilinear", "max_pool"):  # the ops that have CUDA kernels
        assert len(warned) == 1, [str(w.message) for w in warned]
        message = str(warned[0].message)
        assert "row_stack" in message and "numba-cuda" in message and "numpy" in message
        assert isinstance(kernels.cuda_failure(), AttributeError)
    else:
        assert not warned


def test_a_kernel_that_fails_to_compile_falls_back_once(fresh_kernels, monkeypatch, recwarn):
    cuda_conv = _cuda_kernels("conv")
    from numba.core.errors import TypingError

    def fails_to_compile(*args):
        raise TypingError("Cannot determine Numba type of <class 'object'>")

    monkeypatch.setattr(cuda_conv, "im2col", fails_to_compile)
    inputs, fn = OPS["conv2d"]
    check_op(inputs, fn, device="cuda", gradcheck=False)
    check_op(inputs, fn, device="cuda", gradcheck=False)
    warned = [w for w in recwarn if issubclass(w.category, kernels.KernelsUnavailableWarning)]
    assert len(warned) == 1 and "TypingError" in str(warned[0].message)


def test_an_error_of_our_own_is_not_hidden_by_the_fallback(fresh_kernels, monkeypatch):
    cuda_conv = _cuda_kernels("conv")

    def buggy(*args):
        raise IndexError("a bug in the wrapper")

    monkeypatch.setattr(cuda_conv, "im2col", buggy)
    inputs, fn = OPS["conv2d"]
    with pytest.raises(IndexError, match="a bug in the wrapper"):
        check_op(inputs, fn, device="cuda", gradcheck=False)


@pytest.mark.parametrize("value, devices", [("off", ()), ("cpu", ("cpu",)), ("cuda", ("cuda",)), ("on", ("cpu", "cuda"))])
def test_minidl_kernels_chooses_the_devices_for_a_whole_run(value, devices):
    code = "import minidl.kernels as k; print(','.join(k._State.devices))"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MINIDL_KERNELS": value},
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ",".join(devices)


def test_minidl_kernels_refuses_an_unknown_value():
    result = subprocess.run([sys.executable, "-c", "import minidl"], env={**os.environ, "MINIDL_KERNELS": "gpu"},
                            capture_output=True, text=True)
    assert result.returncode != 0 and "MINIDL_KERNELS must be one of" in result.stderr


# ---------------------------------------------------------------- random numbers
def _dropout_mask():
    x = minidl.ones(4, 64, device="cuda")
    return (F.dropout(x, 0.5, training=True).numpy() > 0)


def test_manual_seed_seeds_the_gpu_before_cupy_is_first_used(monkeypatch):
    cupy = sys.modules["cupy"]
    monkeypatch.delitem(sys.modules, "cupy")
    minidl.manual_seed(5)  # CuPy not loaded yet, as when train() seeds a fresh process
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    first = _dropout_mask()
    minidl.manual_seed(5)
    np.testing.assert_array_equal(_dropout_mask(), first)
    minidl.manual_seed(6)
    assert (_dropout_mask() != first).any()
    assert 0.4 < first.mean() < 0.6


def test_rng_state_restores_the_gpu_stream_exactly():
    _dropout_mask()
    state = minidl.get_rng_state()
    expected = _dropout_mask()
    _dropout_mask()
    minidl.set_rng_state(state)
    np.testing.assert_array_equal(_dropout_mask(), expected)


def test_a_cpu_only_rng_state_from_an_older_checkpoint_still_loads():
    numpy_state = minidl.get_rng_state()["numpy"]
    expected = minidl.randn(3).numpy()
    minidl.set_rng_state(numpy_state)
    np.testing.assert_array_equal(minidl.randn(3).numpy(), expected)


def test_gpu_uniform_and_normal_draws_have_their_distributions():
    from minidl.tensor import CounterGenerator

    rng = CounterGenerator(seed=1)
    u = backend.to_numpy(rng.uniform(-2.0, 3.0, (200_000,)))
    n = backend.to_numpy(rng.normal(1.0, 2.0, (200_000,)))
    assert u.min() >= -2.0 and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.02 and abs(u.var() - 25 / 12) < 0.03
    assert abs(n.mean() - 1.0) < 0.02 and abs(n.std() - 2.0) < 0.02
    assert abs(np.mean(np.abs(n - 1.0) < 2.0) - 0.6827) < 0.005  # one standard deviation
    assert rng.offset == 3 * 200_000  # uniform draws once, normal twice


# ---------------------------------------------------------------- GPUs other than the first
@on_standin
@pytest.mark.parametrize("model", ["deeplabv2", "deeplabv3plus"])
def test_a_training_step_on_cuda_1_computes_on_gpu_1(model):
    from minidl.train import TrainConfig, build_model, segmentation_loss

    config = TrainConfig(model=model, backbone="resnet_small", head_channels=8, num_classes=3, device="cuda:1")
    net = build_model(config).to(config.device)
    optimizer = minidl.optim.Adam(net.parameters(), lr=0.01)
    images = minidl.randn(2, 3, 33, 33, device="cuda:1")
    labels = minidl.randint(0, 3, (2, 33, 33), device="cuda:1")
    loss = segmentation_loss(net, images, labels, config.loss_on)
    loss.backward()
    optimizer.step()
    assert str(loss.device) == "cuda:1"
    arrays = [p.data for p in net.parameters()] + [p.grad.data for p in net.parameters()]
    arrays += [b.data for b in net.buffers()]
    arrays += [v for s in optimizer.state.values() for v in s.values() if backend.is_cupy_array(v)]
    assert {a.device.id for a in arrays} == {1}
    assert sys.modules["cupy"].cuda.Device().id == 0  # the current GPU is left as it was


@on_standin
def test_computing_on_a_gpu_that_is_not_current_fails_in_the_stand_in():
    """The stand-in's rule that the test above relies on: it refuses work on another GPU's arrays."""
    cupy = sys.modules["cupy"]
    with cupy.cuda.Device(1):
        a = cupy.ones(3)
    with pytest.raises(ValueError, match=r"resides \(1\) is different from the current device \(0\)"):
        a + 1


# ---------------------------------------------------------------- launches without host waits
class _RecordingNumba:
    """Stands in for ``numba.cuda`` in kernels/cuda/common.py: records how kernels are launched."""

    def __init__(self):
        self.conversions, self.launches = [], []

    def as_cuda_array(self, array, sync=True):
        self.conversions.append(sync)
        return array

    def external_stream(self, pointer):
        return ("external", pointer)

    def default_stream(self):
        return ("default", 0)

    def kernel(self, *arguments):
        pass

    def __getitem__(self, configuration):  # kernel[blocks, threads, stream]
        self.launches.append(configuration)
        return self.kernel


def test_kernels_launch_on_cupys_current_stream_without_a_wait_per_argument(monkeypatch):
    common = _cuda_kernels("common")
    from numba import config

    if config.ENABLE_CUDASIM:
        pytest.skip("the simulator has no streams and no CUDA array interface to convert")

    numba_cuda = _RecordingNumba()
    monkeypatch.setattr(common, "cuda", numba_cuda)
    monkeypatch.setattr(common, "_streams", {})
    cupy = sys.modules["cupy"]
    a, b = cupy.ones(5), cupy.zeros(5)
    common.launch(numba_cuda, a, a, b, 3, 1.5)
    stream = cupy.cuda.Stream()
    with stream:
        common.grid(numba_cuda, 2, 32, a, b)
    assert numba_cuda.conversions == [False] * 4  # every array argument, none of them waiting
    assert [launch[2] for launch in numba_cuda.launches] == [("default", 0), ("external", stream.ptr)]


# ---------------------------------------------------------------- the CPU-only corners, given GPU tensors
def test_crf_takes_probabilities_on_cuda():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    probs = F.softmax(minidl.randn(3, 12, 10), 0)
    on_gpu = dense_crf(image, probs.to("cuda"), iterations=3)
    np.testing.assert_array_equal(on_gpu, dense_crf(image, probs, iterations=3))


def test_metrics_take_predictions_and_labels_on_cuda():
    rng = np.random.default_rng(0)
    pred, label = rng.integers(0, 3, (2, 5, 5)), rng.integers(0, 3, (2, 5, 5))
    label[0, 0] = 255
    expected, metrics = SegmentationMetrics(3), SegmentationMetrics(3)
    expected.update(pred, label)
    metrics.update(minidl.tensor(pred, device="cuda"), minidl.tensor(label, device="cuda"))
    np.testing.assert_array_equal(metrics.confusion_matrix, expected.confusion_matrix)


def test_checkpoints_of_a_cuda_model_hold_numpy_and_load_back_onto_cuda(tmp_path):
    from minidl import io

    net = minidl.nn.Sequential(minidl.nn.Conv2d(3, 4, 3), minidl.nn.BatchNorm2d(4)).to("cuda")
    optimizer = minidl.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(minidl.randn(2, 3, 5, 5, device="cuda")).sum().backward()
    optimizer.step()
    io.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "rng": minidl.get_rng_state()},
            tmp_path / "checkpoint.npz")
    state = io.load(tmp_path / "checkpoint.npz")
    restored = minidl.nn.Sequential(minidl.nn.Conv2d(3, 4, 3), minidl.nn.BatchNorm2d(4)).to("cuda")
    restored.load_state_dict(state["model"])
    for (name, a), (_, b) in zip(net.state_dict().items(), restored.state_dict().items()):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert all(p.device == "cuda" for p in restored.parameters())


# ---------------------------------------------------------------- no host waits inside a training step
def test_a_bad_class_id_on_cuda_is_reported_at_the_next_read():
    logits = minidl.randn(2, 3, 4, device="cuda")
    target = minidl.tensor([[0, 1, 5, 2], [2, 255, 1, 0]], device="cuda")
    loss = F.cross_entropy(logits, target, ignore_index=255)  # no wait for the GPU here
    with pytest.raises(ValueError, match=r"outside \[0, 3\) .*found \[5\]"):
        loss.item()
    assert F.cross_entropy(logits, target.clamp(max=2), ignore_index=255).item() > 0  # the error was reported once


@on_standin
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_training_step_on_cuda_never_waits_for_the_gpu(optimizer):
    from minidl.train import TrainConfig, _optimizer, build_model, segmentation_loss

    config = TrainConfig(backbone="resnet_small", head_channels=16, device="cuda", optimizer=optimizer)
    net = build_model(config).to("cuda").train()
    step_with = _optimizer(config, net)
    images, labels = minidl.randn(2, 3, 33, 33, device="cuda"), minidl.randint(0, 7, (2, 33, 33), device="cuda")
    for _ in range(2):  # the first step also creates the optimizer's state
        with standin_cupy.counting() as counted:
            loss = segmentation_loss(net, images, labels, config.loss_on)
            step_with.zero_grad()
            loss.backward()
            step_with.step()
        assert counted.host_waits == 0


@on_standin
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_an_optimizer_step_takes_a_few_launches_whatever_the_number_of_parameters(name):
    """The parameters are views into one flat array per device and dtype, stepped all at once."""
    params = [minidl.randn(3, 4, device="cuda", requires_grad=True) for _ in range(60)]
    make = {"sgd": lambda: minidl.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4),
            "adam": lambda: minidl.optim.Adam(params, lr=1e-3, weight_decay=1e-4)}[name]
    optimizer = make()
    for _ in range(2):  # the first step creates the state
        for p in params:
            p.grad = minidl.randn(3, 4, device="cuda")
        with standin_cupy.counting() as counted:
            optimizer.step()
    assert counted.launches <= 16, counted.launches  # one per parameter would be 60 and more


# ---------------------------------------------------------------- the launch budget of a training step
class _KernelsAsOneLaunch:
    """The CUDA kernels of a topic as a GPU with working kernels runs them: one launch a call (computed here
    by the readable twin, counted once)."""

    def __init__(self, readable):
        self.readable = readable

    def __getattr__(self, name):
        def run(*args, **kwargs):
            with standin_cupy.one_launch():
                return getattr(self.readable, name)(*args, **kwargs)

        return run


# Launches of one training step of the main job's model (v3+, resnet_small, 64-channel head, 7 classes;
# forward, backward and Adam) before issue 13: 2413, of which Adam's step 1040 (13 per parameter) and
# batch norm 806 (31 per layer). The budget is a third of that; the count does not depend on the batch or
# image size. benchmarks/RESULTS.md has the counts.
LAUNCH_BUDGET = 2413 // 3


@on_standin
def test_a_training_step_of_the_main_jobs_model_stays_within_its_launch_budget(monkeypatch):
    from minidl.train import TrainConfig, _optimizer, build_model, segmentation_loss

    monkeypatch.setattr(kernels, "_cuda_kernels", lambda topic, readable: (
        _KernelsAsOneLaunch(readable) if topic in ("conv", "depthwise", "interpolate", "pool") else readable))
    config = TrainConfig(backbone="resnet_small", head_channels=64, optimizer="adam", device="cuda")
    net = build_model(config).to("cuda").train()
    optimizer = _optimizer(config, net)
    images, labels = minidl.randn(2, 3, 33, 33, device="cuda"), minidl.randint(0, 7, (2, 33, 33), device="cuda")
    for _ in range(2):  # the first step also creates the optimizer's state and its flat buckets
        with standin_cupy.counting() as counted:
            loss = segmentation_loss(net, images, labels, config.loss_on)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert counted.launches <= LAUNCH_BUDGET, f"{counted.launches} launches, budget {LAUNCH_BUDGET}"


# ---------------------------------------------------------------- fused elementwise code (backend.fused)
RELU = ([(3, 4)], lambda lib, x: lib.nn.functional.relu(x) * x)  # ReLU's backward is fused


@on_standin
def test_ops_match_torch_when_cupy_cannot_fuse(fresh_kernels, monkeypatch, recwarn):
    def cannot_fuse():  # every fused call, made before or after, fails as cupy.fuse's tracing would
        raise NotImplementedError("this construct is not supported in cupy.fuse")

    monkeypatch.setattr(standin_cupy, "one_launch", cannot_fuse)
    for inputs, fn in [OPS["batch_norm"], RELU] * 2:
        check_op(inputs, fn, device="cuda", gradcheck=False)
    params = [minidl.randn(3, 4, device="cuda", requires_grad=True) for _ in range(3)]
    for p in params:
        p.grad = minidl.ones(3, 4, device="cuda")
    before = [p.data.copy() for p in params]
    minidl.optim.Adam(params, lr=0.1).step()
    for p, b in zip(params, before):  # Adam's first step moves every weight by lr against its gradient's sign
        np.testing.assert_allclose(backend.to_numpy(p.data), backend.to_numpy(b) - 0.1, rtol=1e-5)
    warned = [w for w in recwarn if issubclass(w.category, kernels.KernelsUnavailableWarning)
              and "could not fuse" in str(w.message)]
    assert len(warned) == 1


@on_standin
def test_switched_off_kernels_run_fused_code_as_separate_operations(fresh_kernels):
    inputs, fn = OPS["batch_norm"]
    x, w, b = (minidl.randn(*shape, device="cuda") for shape in inputs)
    with standin_cupy.counting() as fused:
        F.batch_norm(x, None, None, w, b, training=True)
    with kernels.disabled(), standin_cupy.counting() as separate:
        F.batch_norm(x, None, None, w, b, training=True)
    assert separate.launches > fused.launches + 3


# ---------------------------------------------------------------- the loader on 'cuda'
def _loader(device, **options):
    data = SyntheticSegmentation(size=8, image_size=33, seed=1)
    options = {"batch_size": 3, "seed": 2, "transform": train_transform(25, data.MEAN, data.STD), **options}
    return DataLoader(data, device=device, **options)


def _on_host(batches):
    return [tuple(t.numpy() if isinstance(t, minidl.Tensor) else t for t in batch) for batch in batches]


@pytest.mark.parametrize("options", [{"drop_last": False}, {"num_workers": 2, "drop_last": False},
                                     {"batch_size": 1, "transform": RandomScale(0.5, 2.0)}],
                         ids=["last-batch-smaller", "workers", "sizes-vary"])
def test_the_cuda_loader_gives_the_cpu_loaders_batches_exactly(options):
    """Last batches of an epoch smaller (drop_last=False), and items of many sizes (batch_size=1, no crop):
    the staging buffers change size; the values do not change."""
    expected = list(_loader(None, **options).batches(0, 7))
    batches = list(_loader("cuda", **options).batches(0, 7))
    assert all(t.device == "cuda" for batch in batches for t in batch)
    got = _on_host(batches)
    assert {a.shape for a, _ in expected} == {a.shape for a, _ in got} and len({a.shape for a, _ in got}) > 1
    for (images, labels), (want_images, want_labels) in zip(got, expected):
        assert images.dtype == np.float32 and labels.dtype == np.int64
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


@on_standin
def test_the_cuda_loader_copies_one_batch_ahead_on_a_side_stream_that_the_step_waits_for(monkeypatch):
    cupy = sys.modules["cupy"]
    copies = []  # the stream of each host-to-device copy
    plain_set = standin_cupy.ndarray.set

    def recording_set(self, arr, stream=None):
        copies.append(stream)
        plain_set(self, arr, stream)

    monkeypatch.setattr(standin_cupy.ndarray, "set", recording_set)
    stream = _loader("cuda").batches()
    images, labels = next(stream)
    assert len(copies) == 4  # images and labels of this batch and of the next
    assert all(s is not None and s is not cupy.cuda.Stream.null for s in copies)
    assert len(set(copies)) == 1  # one side stream
    with cupy.cuda.Stream():  # a stream that has not waited for the copy cannot use the batch
        with pytest.raises(RuntimeError, match="before the copy"):
            images.data + 1
    first = _on_host([(images, labels)])[0]  # the current stream did wait
    np.testing.assert_array_equal(first[0], _loader(None).load_batch(0, 0)[0])
    next(stream)
    assert len(copies) == 6
    stream.close()


@on_standin
@pytest.mark.parametrize("workers", [0, 2])
def test_the_cuda_loader_never_waits_for_the_gpu_and_reuses_its_pinned_buffers(workers, monkeypatch):
    cupy = sys.modules["cupy"]
    pinned = []
    monkeypatch.setattr(cupy.cuda, "alloc_pinned_memory", lambda size: pinned.append(size) or
                        standin_cupy.PinnedMemory(size))
    stream = _loader("cuda", num_workers=workers, drop_last=False).batches()
    for _ in range(2):  # the first batches fill the ring of staging buffers
        next(stream)
    for _ in range(9):  # three epochs, the last batch of each smaller (2 items)
        with standin_cupy.counting() as counted:
            next(stream)
        assert counted.host_waits == 0  # a copy from memory that is not pinned would wait too
        assert counted.launches <= 4  # two arrays made, two copies
    stream.close()
    assert len(pinned) == 3, pinned  # one staging buffer for each slot of the ring, sized once


@on_standin
def test_a_staging_buffer_is_written_again_only_after_its_copy_is_done():
    """On a GPU that lags behind, the loader waits for a buffer's copy before collating into it: the
    batches are still the CPU loader's, though none is used until all have been drawn."""
    expected = list(_loader(None).batches(0, 8))
    with standin_cupy.gpu_behind(), standin_cupy.counting() as counted:
        batches = list(_loader("cuda").batches(0, 8))
    assert counted.host_waits >= 8 - 3  # each buffer after the first three: one wait (and one at the end)
    for (images, labels), (want_images, want_labels) in zip(_on_host(batches), expected):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


# ---------------------------------------------------------------- memory
@on_standin
def test_a_gpu_convolutions_backward_holds_one_column_array_at_a_time():
    """im2col's columns (C_in·kh·kw × N·H·W) are the largest temporary of a convolution; on a GPU backward
    unfolds them again from the input. Its peak (the stand-in's NumPy allocations, traced) must stay under
    two column arrays: the columns are gone before their gradient is made."""
    import tracemalloc

    x = minidl.randn(4, 32, 65, 65, device="cuda", requires_grad=True)
    w = minidl.randn(32, 32, 3, 3, device="cuda", requires_grad=True)
    columns_bytes = 32 * 9 * 4 * 65 * 65 * 4
    y = F.conv2d(x, w, padding=2, dilation=2)
    g = minidl.ones(*y.shape, device="cuda")
    tracemalloc.start()
    try:
        y.backward(g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * columns_bytes, f"{peak / columns_bytes:.2f} column arrays"
