"""reference.train, the PyTorch twin's trainer: DDP under torchrun equals one process, one checkpoint format
for both trainers (eval, resume both ways), and export/import of plain PyTorch state_dicts."""
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

import minidl
import minidl.train as training
from minidl import io
from minidl.cli import load_trained, main
from minidl.train import read_log
from reference import train as twin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# DeepLab v2 has no dropout, so runs that share their weights take the same steps whatever generator they hold;
# its ResNet has batch norm, which SyncBatchNorm must synchronise.
TINY = ["--backbone", "resnet_small", "--crop-size", "33", "--train-size", "16", "--head-channels", "8",
        "--lr", "0.01"]
V2 = ["--model", "deeplabv2", *TINY]


def arguments(out, *more, iters=3, batch=4, every=3):
    return [*more, "--iters", str(iters), "--batch-size", str(batch), "--eval-every", str(every),
            "--checkpoint-every", str(every), "--out", str(out)]


def losses(out):
    return [r["loss"] for r in read_log(out)]


def dies_after_checkpoint(monkeypatch, trainer, iteration):
    """Make the training loop of ``trainer`` (minidl.train or reference.train) die once it has logged the
    iteration after its checkpoint at ``iteration``."""
    log = trainer._log

    def log_then_die(out, record):
        log(out, record)
        if record["iteration"] == iteration + 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_log", log_then_die)


def test_torchrun_two_processes_take_the_steps_of_one_and_only_rank_0_writes(tmp_path):
    """Each rank starts in a folder of its own and writes by a relative path: what rank 1 wrote would be
    in rank1/. Without SyncBatchNorm the two halves of each batch have their own statistics, and the
    weights differ: the batch was split."""
    float64 = [*V2, "--dtype", "float64", "--train-size", "8"]  # 2 batches an epoch: iteration 3 opens epoch 1
    run = arguments("run", *float64)
    assert twin.main(arguments(tmp_path / "one", *float64)) == 0
    for name, extra in (("sync", []), ("unsynced", ["--no-sync-bn"])):
        for rank in (0, 1):
            (tmp_path / name / f"rank{rank}").mkdir(parents=True)
        command = f'cd rank$RANK && exec {shlex.quote(sys.executable)} -m reference.train {shlex.join(run + extra)}'
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "--no-python", "sh", "-c", command], cwd=tmp_path / name, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": ROOT})
        assert done.returncode == 0, done.stderr[-3000:]
        assert list((tmp_path / name / "rank1").iterdir()) == []
    written = tmp_path / "sync" / "rank0" / "run"
    assert sorted(os.listdir(written)) == ["checkpoint.npz", "config.json", "curves.png", "metrics.jsonl"]
    one, two = io.load(tmp_path / "one" / "checkpoint.npz"), io.load(written / "checkpoint.npz")
    unsynced = io.load(tmp_path / "unsynced" / "rank0" / "run" / "checkpoint.npz")
    for key, weights in one["model"].items():
        np.testing.assert_allclose(two["model"][key], weights, rtol=1e-10, atol=1e-12, err_msg=key)
    for i, state in one["optimizer"]["state"].items():
        np.testing.assert_allclose(two["optimizer"]["state"][i]["momentum_buffer"], state["momentum_buffer"],
                                   rtol=1e-9, atol=1e-12)
    assert any(not np.allclose(unsynced["model"][k], w, rtol=1e-6) for k, w in one["model"].items())
    np.testing.assert_allclose(losses(written), losses(tmp_path / "one"), rtol=1e-12)
    assert read_log(written)[-1]["miou"] == pytest.approx(read_log(tmp_path / "one")[-1]["miou"], abs=1e-12)


def test_a_twin_run_resumed_on_one_process_ends_exactly_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """DeepLab v3+ has dropout: the resumed run must restore torch's generator as well as the weights,
    the optimiser and the schedule."""
    run = [*TINY, "--model", "deeplabv3plus", "--optimizer", "adam", "--lr", "0.001"]
    assert twin.main(arguments(tmp_path / "whole", *run, iters=4, batch=2, every=2)) == 0
    dies_after_checkpoint(monkeypatch, twin, 2)
    with pytest.raises(KeyboardInterrupt):
        twin.main(arguments(tmp_path / "resumed", *run, iters=4, batch=2, every=2))
    monkeypatch.undo()
    assert twin.main([*arguments(tmp_path / "resumed", *run, iters=4, batch=2, every=2), "--resume"]) == 0
    whole, resumed = io.load(tmp_path / "whole" / "checkpoint.npz"), io.load(tmp_path / "resumed" / "checkpoint.npz")
    for key, weights in whole["model"].items():
        np.testing.assert_array_equal(resumed["model"][key], weights, err_msg=key)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "whole")


def test_a_twin_run_is_evaluated_by_minidl_and_resumed_by_minidl_train(tmp_path, capsys):
    out = tmp_path / "run"
    assert twin.main(arguments(out, *TINY, "--model", "deeplabv3plus", iters=2, every=2)) == 0
    twin_miou = read_log(out)[-1]["miou"]
    minidl_model, config, val_set, stats = load_trained(out / "checkpoint.npz")
    assert training.evaluate(minidl_model, val_set, stats)["miou"] == pytest.approx(twin_miou, abs=1e-9)
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoint.npz")]) == 0
    assert f"mIoU {twin_miou:.4f}" in capsys.readouterr().out
    assert main(["train", *arguments(out, *TINY, "--model", "deeplabv3plus", iters=3, every=2), "--resume"]) == 0
    log = read_log(out)
    assert [r["iteration"] for r in log] == [1, 2, 3] and np.isfinite(log[-1]["loss"])
    assert io.load(out / "checkpoint.npz")["iteration"] == 3


def test_a_minidl_run_resumed_by_the_twin_continues_its_loss_curve(tmp_path, monkeypatch):
    """minidl trains 3 of 6 iterations and stops; the twin resumes from its checkpoint (weights, momentum,
    schedule) on the same batches; its losses follow those of minidl's uninterrupted run."""
    assert main(["train", *arguments(tmp_path / "whole", *V2, iters=6)]) == 0
    dies_after_checkpoint(monkeypatch, training, 3)
    with pytest.raises(KeyboardInterrupt):
        main(["train", *arguments(tmp_path / "resumed", *V2, iters=6)])
    monkeypatch.undo()
    assert twin.main([*arguments(tmp_path / "resumed", *V2, iters=6), "--resume"]) == 0
    whole, resumed = losses(tmp_path / "whole"), losses(tmp_path / "resumed")
    assert resumed[:3] == whole[:3]  # minidl's own lines, kept
    np.testing.assert_allclose(resumed[3:], whole[3:], rtol=1e-5)  # float32 in two implementations
    assert [r["lr"] for r in read_log(tmp_path / "resumed")] == pytest.approx([r["lr"] for r in read_log(tmp_path / "whole")])


def test_export_loads_into_the_reference_model_with_minidls_logits_and_import_reverses_it(tmp_path, capsys):
    out = tmp_path / "run"
    model_args = [*TINY, "--model", "deeplabv3plus"]
    assert main(["train", *arguments(out, *model_args, iters=1, every=1)]) == 0
    assert main(["export", str(out / "checkpoint.npz"), str(tmp_path / "model.pt")]) == 0
    state_dict = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(type(v) is torch.Tensor for v in state_dict.values())
    ours, config, _, _ = load_trained(out / "checkpoint.npz")
    theirs = twin.build_model(config)
    theirs.load_state_dict(state_dict)  # strict: every key and shape
    images = np.random.default_rng(0).standard_normal((2, 3, 33, 41)).astype(np.float32)
    with minidl.no_grad(), torch.no_grad():
        expected = ours(minidl.tensor(images)).numpy()
        np.testing.assert_allclose(theirs.eval()(torch.from_numpy(images)).numpy(), expected, atol=1e-4, rtol=1e-4)
    assert main(["import", str(tmp_path / "model.pt"), str(tmp_path / "imported.npz"), *model_args]) == 0
    imported, _, _, _ = load_trained(tmp_path / "imported.npz")
    for (key, a), (_, b) in zip(ours.state_dict().items(), imported.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=key)
    assert main(["import", str(tmp_path / "model.pt"), str(tmp_path / "x.npz"), *TINY, "--model", "deeplabv3"]) == 1
    assert "decoder" in capsys.readouterr().err  # the keys that do not fit are named


def test_import_reads_a_torchvision_deeplabv3_checkpoint(tmp_path):
    from minidl.models import torchvision_compat as ours
    from reference.models import torchvision_compat as theirs

    torch.manual_seed(0)
    torchvision_model = theirs.deeplabv3_resnet50(num_classes=3, aux_loss=True)
    torch.save({"model": torchvision_model.state_dict()}, tmp_path / "tv.pth")
    assert main(["import", str(tmp_path / "tv.pth"), str(tmp_path / "tv.npz")]) == 0
    model = ours.deeplabv3_resnet50(num_classes=3, aux_loss=True)
    model.load_state_dict(io.load(tmp_path / "tv.npz"))  # strict: every key and shape
    imported = model.state_dict()
    for key, value in torchvision_model.state_dict().items():
        np.testing.assert_array_equal(imported[key], value.numpy(), err_msg=key)


def test_twin_options_and_their_errors(tmp_path, capsys):
    assert twin.main(arguments(tmp_path / "amp", *V2, "--amp", iters=1, batch=2, every=1)) == 0
    assert np.isfinite(losses(tmp_path / "amp")[0])
    assert twin.main(arguments(tmp_path / "x", *V2, "--amp", "--dtype", "float64", iters=1)) == 1
    assert "--amp bf16 needs float32" in capsys.readouterr().err
    assert twin.main(arguments(tmp_path / "y", "--backbone", "resnet9000")) == 1
    assert "resnet9000" in capsys.readouterr().err and not (tmp_path / "y").exists()
    assert twin.main([*arguments(tmp_path / "amp", *V2, "--amp", iters=1, batch=2, every=1), "--resume"]) == 0
    assert "the run is complete" in capsys.readouterr().out
