"""Training end to end on tiny settings: the loss falls, resume is exact, divergence stops cleanly, the CLI works."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import minidl
import minidl.train as training
from minidl import io
from minidl.cli import main
from minidl.train import TrainConfig, TrainingDiverged, read_log, train


def tiny(out, **changes):
    options = dict(model="deeplabv3plus", backbone="resnet_small", image_size=33, batch_size=2, train_size=16,
                   val_size=2, head_channels=16, iterations=6, eval_every=3, checkpoint_every=3, lr=0.01,
                   out=str(out), progress=False)
    options.update(changes)
    return TrainConfig(**options)


def test_short_training_lowers_the_loss(tmp_path):
    _, metrics = train(tiny(tmp_path, iterations=40, eval_every=40, checkpoint_every=40, lr=0.05, train_size=4))
    losses = [r["loss"] for r in read_log(tmp_path)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert 0 <= metrics["miou"] <= 1
    for name in ("checkpoint.npz", "metrics.jsonl", "curves.png", "config.json"):
        assert os.path.exists(tmp_path / name)


def die_after_checkpoint_3(monkeypatch, run):
    """``run()`` as a process that dies right after the checkpoint at iteration 3; then the log is put back."""
    log = training._log

    def dying(out, record):
        log(out, record)
        if record["iteration"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_log", dying)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(training, "_log", log)


@pytest.mark.parametrize("model", ["deeplabv2", "deeplabv3", "deeplabv3plus"])
def test_resume_continues_exactly(tmp_path, monkeypatch, model, device):
    whole, _ = train(tiny(tmp_path / "whole", model=model, device=device))
    die_after_checkpoint_3(monkeypatch, lambda: train(tiny(tmp_path / "resumed", model=model, device=device)))
    resumed, _ = train(tiny(tmp_path / "resumed", model=model, device=device), resume=True)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert [r["loss"] for r in read_log(tmp_path / "whole")] == [r["loss"] for r in read_log(tmp_path / "resumed")]


def test_model_options_reach_the_model_and_come_back_from_the_checkpoint(tmp_path):
    from minidl.cli import load_trained

    config = tiny(tmp_path, model="deeplabv3", iterations=1, model_options={"separable": True, "image_pooling": False})
    model, _ = train(config)
    assert len(model.aspp.convs) == 4 and isinstance(model.aspp.convs[1], minidl.nn.SeparableConv2d)
    loaded, loaded_config, _, _ = load_trained(tmp_path / "checkpoint.npz")
    assert loaded_config.model_options == {"separable": True, "image_pooling": False}
    assert loaded.state_dict().keys() == model.state_dict().keys()


def test_train_or_load_loads_a_finished_run_and_retrains_a_changed_one(tmp_path, monkeypatch):
    first, metrics = training.train_or_load(tiny(tmp_path, iterations=3))
    calls = []
    monkeypatch.setattr(training, "train", lambda config: calls.append(config) or (None, None))
    loaded, loaded_metrics = training.train_or_load(tiny(tmp_path, iterations=3, progress=True, eval_every=1))
    assert not calls and loaded_metrics["miou"] == metrics["miou"]
    for (name, a), (_, b) in zip(first.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    training.train_or_load(tiny(tmp_path, iterations=3, lr=0.02))
    training.train_or_load(tiny(tmp_path, iterations=4))
    assert [(c.lr, c.iterations) for c in calls] == [(0.02, 3), (0.01, 4)]


def test_train_or_load_goes_on_from_the_checkpoint_of_an_interrupted_run(tmp_path, monkeypatch):
    whole, _ = train(tiny(tmp_path / "whole"))
    die_after_checkpoint_3(monkeypatch, lambda: training.train_or_load(tiny(tmp_path / "resumed")))
    started = []
    monkeypatch.setattr(training, "start_run_folder", lambda config, resume: started.append(resume) or
                        os.makedirs(config.out, exist_ok=True))
    resumed, _ = training.train_or_load(tiny(tmp_path / "resumed"))
    assert started == [True]
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_train_or_load_reads_a_field_missing_from_an_older_checkpoint_as_its_default(tmp_path, monkeypatch):
    training.train_or_load(tiny(tmp_path, iterations=3))
    state = io.load(tmp_path / "checkpoint.npz")
    del state["config"]["random_scale"]  # as saved before the field existed
    io.save(state, tmp_path / "checkpoint.npz")
    calls = []
    monkeypatch.setattr(training, "train", lambda config: calls.append(config) or (None, None))
    training.train_or_load(tiny(tmp_path, iterations=3))
    assert not calls
    training.train_or_load(tiny(tmp_path, iterations=3, random_scale=(1, 1)))
    assert [c.random_scale for c in calls] == [(1.0, 1.0)]


def test_random_scale_one_trains_on_the_images_as_they_are(tmp_path):
    config = tiny(tmp_path, random_scale=(1, 1), batch_size=4, train_size=4)
    train_set, _, stats = training.build_datasets(config)
    _, labels = next(training.build_loader(config, train_set, stats).batches(0))
    originals = [train_set[i][1] for i in range(len(train_set))]
    for label in labels.numpy():  # each one a whole item, maybe mirrored: not rescaled, not cropped
        assert any(np.array_equal(label, o) or np.array_equal(label, o[:, ::-1]) for o in originals)


def test_v2_takes_the_loss_on_downsampled_labels():
    assert TrainConfig(model="deeplabv2").loss_on == "downsampled_labels"
    assert TrainConfig(model="deeplabv3").loss_on == "upsampled_logits"


def test_losses_are_read_once_per_log_interval_and_logged_for_every_iteration(tmp_path, monkeypatch):
    reads = []
    read_losses = training.read_losses
    monkeypatch.setattr(training, "read_losses", lambda pending, *rest: reads.append(len(pending)) or
                        read_losses(pending, *rest))
    train(tiny(tmp_path / "grouped", log_every=4, eval_every=6, checkpoint_every=3, device="cuda"))
    assert reads == [3, 1, 2]  # read before the checkpoint at 3, at 4 (the interval), and at the end
    train(tiny(tmp_path / "each", log_every=1, eval_every=6, checkpoint_every=3, device="cuda"))
    grouped, each = read_log(tmp_path / "grouped"), read_log(tmp_path / "each")
    assert [r["iteration"] for r in grouped] == list(range(1, 7))
    assert [r["loss"] for r in grouped] == [r["loss"] for r in each]


@pytest.mark.parametrize("log_every", [1, 10])
def test_a_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, log_every, device):
    loss_of = training.segmentation_loss
    calls = []

    def nan_at_5(*arguments):
        calls.append(1)
        loss = loss_of(*arguments)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(training, "segmentation_loss", nan_at_5)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at iteration 5.*checkpoint"):
        train(tiny(tmp_path, log_every=log_every, device=device))
    assert io.load(tmp_path / "checkpoint.npz")["iteration"] == 3


def test_resume_without_a_checkpoint_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(tiny(tmp_path), resume=True)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="model must be one of"):
        TrainConfig(model="deeplabv4")
    with pytest.raises(ValueError, match="data must be 'synthetic', 'scenes', 'voc:PATH' or 'folder:PATH'"):
        TrainConfig(data="imagenet")
    with pytest.raises(ValueError, match="random_scale"):
        TrainConfig(random_scale=(2.0, 0.5))
    with pytest.raises(ValueError, match=r"log_every must be positive, got 250, 250, 0"):
        TrainConfig(log_every=0)


def test_command_line_train_eval_predict(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--backbone", "resnet_small", "--iters", "2", "--batch-size", "2", "--crop-size", "33",
                 "--head-channels", "16", "--eval-every", "2", "--checkpoint-every", "2", "--random-scale", "0.75,1.5",
                 "--train-size", "50", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["iterations"] == 2 and config["backbone"] == "resnet_small"
    assert config["random_scale"] == [0.75, 1.5] and config["train_size"] == 50
    checkpoint = str(out / "checkpoint.npz")
    assert main(["eval", checkpoint, "--scales", "0.75,1", "--flip", "--crf"]) == 0
    assert "mIoU" in capsys.readouterr().out
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(photo)
    assert main(["predict", checkpoint, str(photo), "--crf"]) == 0
    overlay = Image.open(tmp_path / "photo_segmentation.png")
    assert overlay.size == (50, 40)


def test_resuming_a_finished_run_says_so_and_reports_its_last_evaluation(tmp_path, capsys):
    out = tmp_path / "run"
    arguments = ["train", "--backbone", "resnet_small", "--iters", "2", "--batch-size", "2", "--crop-size", "33",
                 "--head-channels", "8", "--train-size", "4", "--eval-every", "1", "--out", str(out)]
    assert main(arguments) == 0
    evaluated = [r for r in read_log(out) if "miou" in r]
    before = (out / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main(arguments + ["--resume"]) == 0  # crashed in cli._report on the metrics train returned: None
    printed = capsys.readouterr().out
    assert "the run is complete (2 iterations of 2)" in printed
    assert f"mIoU {evaluated[-1]['miou']:.4f}   pixel accuracy {evaluated[-1]['pixel_accuracy']:.4f}" in printed
    assert (out / "checkpoint.npz").read_bytes() == before and len(read_log(out)) == 2


def test_settings_that_cannot_build_a_model_leave_no_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--backbone", "resnet9000", "--out", str(out)]) == 1
    assert "resnet9000" in capsys.readouterr().err
    assert not out.exists()


def test_command_line_rejects_a_backwards_scale_range(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--random-scale", "2,0.5"])
    assert "--random-scale: takes LOW,HIGH with LOW <= HIGH, got '2,0.5'" in capsys.readouterr().err


def test_command_line_errors_name_the_file(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.npz")]) == 1
    assert "missing.npz" in capsys.readouterr().err
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    train(tiny(tmp_path / "run", iterations=1, eval_every=1, checkpoint_every=1))
    assert main(["predict", str(tmp_path / "run" / "checkpoint.npz"), str(not_an_image)]) == 1
    assert "notes.txt" in capsys.readouterr().err


def test_evaluation_sees_the_images_as_training_did(tmp_path):
    """Unpadded: padding 33×33 to 48 (OS 16) would move every score cell away from where it was trained."""
    from minidl.data import eval_transform
    from minidl.inference import predict
    from minidl.metrics import SegmentationMetrics

    config = tiny(tmp_path, val_size=4)
    minidl.manual_seed(1)
    model = training.build_model(config).eval()
    for parameter in model.parameters():  # random weights big enough that the predicted classes vary in space
        parameter.data[...] = np.random.default_rng(0).standard_normal(parameter.shape)
    _, val_set, stats = training.build_datasets(config)
    unpadded, padded = SegmentationMetrics(config.num_classes), SegmentationMetrics(config.num_classes)
    for image, label in (val_set[i] for i in range(len(val_set))):
        normalised, _ = eval_transform(*stats)(image, label, np.random.default_rng(0))
        with minidl.no_grad():
            unpadded.update(predict(model, normalised[None]).numpy()[0].argmax(0), label)
            padded.update(predict(model, normalised[None], stride=16).numpy()[0].argmax(0), label)
    cm = training.evaluate(model, val_set, stats)["confusion_matrix"]
    np.testing.assert_array_equal(cm, unpadded.compute()["confusion_matrix"])
    assert not np.array_equal(cm, padded.compute()["confusion_matrix"])  # the two geometries do differ here


def test_main_job_trains_evaluates_three_ways_and_writes_its_run_folder(tmp_path, monkeypatch, capsys, device):
    recipe = training.cpu_recipe
    small = dict(train_size=16, val_size=2, image_size=33, head_channels=16)
    monkeypatch.setattr(training, "cpu_recipe", lambda *a, **changes: recipe(*a, **{**changes, **small}))
    assert main(["run", "--iters", "2", "--out", str(tmp_path), "--device", device]) == 0
    for name in ("checkpoint.npz", "metrics.jsonl", "curves.png", "predictions.png", "results.json"):
        assert os.path.exists(tmp_path / name), name
    results = json.loads((tmp_path / "results.json").read_text())
    assert [k for k in results if "scale" in k] == ["single scale", "multi-scale + flip", "multi-scale + flip + CRF"]
    config = io.load(tmp_path / "checkpoint.npz")["config"]
    assert (config["backbone"], config["batch_size"], tuple(config["random_scale"])) == ("resnet_small", 16, (1, 1))
    assert "multi-scale + flip + CRF" in capsys.readouterr().out


@pytest.mark.parametrize("loss_on", ["downsampled_labels", "upsampled_logits"])
def test_multi_scale_inputs_loss_matches_pytorch(loss_on):
    """v2's MSC training loss: every scale's scores and their max at the first scale's size take the loss
    (labels nearest-downsampled to each), summed; value and every gradient against the same sum in PyTorch."""
    import torch
    import torch.nn.functional as tF

    import reference.models
    from minidl.train import segmentation_loss

    torch.manual_seed(0)
    theirs = reference.models.deeplabv2("resnet_small", num_classes=3, atrous_rates=(2, 3)).double().train()
    ours = minidl.models.deeplabv2("resnet_small", num_classes=3, atrous_rates=(2, 3)).double().train()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((2, 3, 41, 41)), rng.integers(0, 3, (2, 41, 41))
    labels[0, :5] = 255
    scales = (1.0, 0.75, 0.5)

    def torch_loss():
        x, y = torch.tensor(images), torch.tensor(labels)
        maps = []
        for scale in scales:
            side = int(41 * scale + 0.5)
            xs = x if scale == 1 else tF.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
            maps.append(theirs(xs) if loss_on == "upsampled_logits" else theirs.head(theirs.backbone(xs)))
        fused = maps[0]
        for m in maps[1:]:
            fused = torch.maximum(fused, tF.interpolate(m, size=fused.shape[2:], mode="bilinear", align_corners=False))

        def ce(scores):
            small = tF.interpolate(y[:, None].double(), size=scores.shape[2:], mode="nearest")[:, 0].long()
            return tF.cross_entropy(scores, small, ignore_index=255)

        return ce(fused) + sum(ce(m) for m in maps)

    expected = torch_loss()
    expected.backward()
    loss = segmentation_loss(ours, minidl.tensor(images), minidl.tensor(labels), loss_on, scales)
    loss.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-10)
    their_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), their_params[name].grad.numpy(), rtol=1e-7, atol=1e-10,
                                   err_msg=name)
    single = segmentation_loss(ours, minidl.tensor(images), minidl.tensor(labels), loss_on)
    assert loss.item() > single.item()  # four terms, each about as large as the single-scale loss


def test_multi_scale_inputs_are_named_when_wrong_and_refused_by_the_twin():
    from minidl.train import TrainConfig

    with pytest.raises(ValueError, match="train_scales"):
        TrainConfig(train_scales=())
    with pytest.raises(ValueError, match="train_scales"):
        TrainConfig(train_scales=(1.0, -0.5))
    import reference.train

    with pytest.raises(ValueError, match="--train-scales 1.0,0.5"):
        reference.train.train(TrainConfig(train_scales=(1, 0.5)))


def test_a_step_lets_go_of_its_graph_before_the_next_forward(tmp_path, monkeypatch):
    """The last step's activations (held by its loss's graph) are freed before the next step makes its own:
    otherwise a step's peak memory holds two steps' activations."""
    import weakref

    loss_of, graphs, alive = training.segmentation_loss, [], []

    def recording(*arguments):
        alive.append(sum(graph() is not None for graph in graphs))
        loss = loss_of(*arguments)
        graphs.append(weakref.ref(loss.grad_fn))
        return loss

    monkeypatch.setattr(training, "segmentation_loss", recording)
    train(tiny(tmp_path, iterations=4, log_every=10))
    assert len(graphs) == 4 and alive == [0, 0, 0, 0]
