"""The book's experiments (book/experiments.py): the rates, the single-variable ablations, the effect rule
and the evaluation cache.

The expected rates are worked out by hand from the maps' sides (ceil(side / OS)), and the expected
differences between runs are written out per ablation, so a run that quietly changes a second thing fails.
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from minidl.models.aspp import ASPP_RATES, ASPP_V2_RATES
from minidl.train import build_model, train_or_load

spec = importlib.util.spec_from_file_location(
    "book_experiments", Path(__file__).resolve().parent.parent / "book" / "experiments.py")
experiments = importlib.util.module_from_spec(spec)
spec.loader.exec_module(experiments)


def test_the_papers_rates_are_kept_on_the_papers_images_and_scaled_by_the_maps_on_the_books():
    for rates, output_stride in ((ASPP_RATES, 16), (ASPP_V2_RATES, 8), ((12,), 8)):
        assert experiments.book_rates(rates, output_stride, image_size=513) == tuple(rates)
    # 129 px: a 9x9 map at OS 16 against 33x33 (6, 12, 18 -> 1.6, 3.3, 4.9); 17x17 at OS 8 against 65x65
    assert experiments.book_rates(ASPP_RATES, 16, image_size=129) == (2, 3, 5)
    assert experiments.book_rates(ASPP_V2_RATES, 8, image_size=129) == (2, 3, 5, 6)
    assert experiments.book_rates((12,), 8, image_size=129) == (3,)
    assert experiments.book_rates((6,), 16, image_size=33) == (1,)  # never below 1


def differences(a, b):
    """The fields (model options as ``model_options.<key>``) in which two configs differ."""
    flat = [{**{k: v for k, v in vars(c).items() if k not in ("model_options", "out")},
             **{f"model_options.{k}": v for k, v in c.model_options.items()}} for c in (a, b)]
    return {k for k in flat[0].keys() | flat[1].keys() if flat[0].get(k, "unset") != flat[1].get(k, "unset")}


EXPECTED_CHANGES = {  # the one thing each ablation changes; pairs where the papers change two things together
    "atrous convolution: output stride 8 instead of 32": {"output_stride", "model_options.atrous_rates"},
    "ASPP-L instead of LargeFOV": {"model_options.atrous_rates"},
    "multi-scale inputs (MSC), trained and tested": {"train_scales"},
    "fully connected CRF": set(),
    "loss on upsampled logits, not downsampled labels": {"loss_on"},
    "multi-grid (1, 2, 4) instead of (1, 1, 1)": {"model_options.multi_grid"},
    "image pooling": {"model_options.image_pooling"},
    "random rescaling 0.5-2 in training": {"random_scale"},
    "OS 8 instead of 16 at evaluation": set(),
    "multi-scale + flip inference (at OS 8)": set(),
    "multi-scale + flip inference, trained with random rescaling": set(),
    "separable ASPP instead of dense": {"model_options.separable"},
    "decoder": {"model", "model_options.separable"},  # v3+ is separable by default: checked below
}


def test_every_ablation_changes_one_thing_and_names_the_papers_numbers():
    assert [a.idea for a in experiments.ABLATIONS] == list(EXPECTED_CHANGES)
    for ablation in experiments.ABLATIONS:
        (run_a, setting_a), (run_b, setting_b) = ablation.baseline, ablation.variant
        changed = differences(experiments.config(run_a), experiments.config(run_b))
        assert changed == EXPECTED_CHANGES[ablation.idea], ablation.idea
        assert changed or setting_a != setting_b, f"{ablation.idea}: the same run under the same evaluation"
        assert {setting_a, setting_b} <= experiments.EVALUATIONS.keys()
        assert len(ablation.paper_miou) == 2 and all(40 < m < 100 for m in ablation.paper_miou), ablation.idea


def test_the_decoder_ablation_differs_only_by_the_decoder():
    def parameters(name):
        cfg = experiments.config(name)
        return {k: v.shape for k, v in build_model(cfg).state_dict().items()}

    separable, plus = parameters("v3_separable"), parameters("v3plus")
    assert {k for k in plus if k.startswith("decoder.")} and not {k for k in separable if k.startswith("decoder.")}
    encoder = ("backbone.", "aspp.")  # v3 ends in a classifier, v3+ in its decoder's
    assert {k: v for k, v in plus.items() if k.startswith(encoder)} == {
        k: v for k, v in separable.items() if k.startswith(encoder)}
    assert any(k.startswith("aspp.") and "depthwise" in k for k in plus)


def test_an_effect_is_a_difference_of_means_larger_than_either_spread(monkeypatch):
    ablation = experiments.ABLATIONS[0]
    values = {}
    monkeypatch.setattr(experiments, "evaluation", lambda name, setting, seed, device="cpu": values[name][seed])
    values = {ablation.baseline[0]: [0.40, 0.42, 0.44], ablation.variant[0]: [0.43, 0.45, 0.47]}
    result = experiments.compare(ablation)
    assert result["baseline_std"] == pytest.approx(0.02) and result["difference"] == pytest.approx(0.03)
    assert result["effect"] and experiments.verdict(result) == "helps"
    values[ablation.variant[0]] = [0.36, 0.43, 0.50]  # the same gain, but within the variant's spread of 0.07
    assert not experiments.compare(ablation)["effect"]
    assert experiments.verdict(experiments.compare(ablation)) == "within the spread"
    values[ablation.variant[0]] = [0.30, 0.31, 0.32]
    assert experiments.verdict(experiments.compare(ablation)) == "hurts"
    assert not experiments.compare(ablation, seeds=(0,))["effect"]  # one seed has no spread to beat
    rows = experiments.ablation_rows(ablations=(ablation,))
    assert rows[0][1] == "42.0 ± 2.0" and rows[0][2] == "31.0 ± 1.0" and rows[0][3] == "-11.0"
    assert "70.06 → 75.18 (+5.12)" == rows[0][5] and rows[0][6] == "**no**"  # the paper's +5.12 helps; ours hurts
    values[ablation.variant[0]] = [0.43, 0.45, 0.47]
    assert experiments.ablation_rows(ablations=(ablation,))[0][6] == "yes"


def test_the_papers_verdict_calls_a_difference_under_half_a_point_no_change():
    separable = next(a for a in experiments.ABLATIONS if a.idea == "separable ASPP instead of dense")
    assert separable.paper_miou == (79.93, 79.79) and experiments.paper_verdict(separable) == "no change"
    within = {"effect": False, "difference": -0.01}
    assert experiments.agrees(within, separable)
    assert not experiments.agrees({"effect": True, "difference": -0.05}, separable)
    crf = next(a for a in experiments.ABLATIONS if a.idea == "fully connected CRF")
    assert experiments.paper_verdict(crf) == "helps" and not experiments.agrees(within, crf)


def test_evaluations_are_computed_once_and_reuse_the_runs_own_single_scale_score(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RUNS", tmp_path)
    monkeypatch.setattr(experiments, "RECIPE", {**experiments.RECIPE, "image_size": 33, "train_size": 8,
                                                "val_size": 4, "head_channels": 8, "iterations": 2})
    _, metrics = train_or_load(experiments.config("v3"))
    calls = []
    evaluate = experiments.evaluate
    monkeypatch.setattr(experiments, "evaluate", lambda *a, **k: calls.append(k) or evaluate(*a, **k))
    os8 = experiments.evaluation("v3", "OS 8", 0)
    assert experiments.evaluation("v3", "single scale", 0) == metrics["miou"]
    assert experiments.evaluation("v3", "OS 8", 0) == os8
    assert len(calls) == 1  # OS 8 alone was evaluated here: single scale came from train_or_load, then the cache
    model, _ = train_or_load(experiments.config("v3"))
    _, val_set, stats = experiments.build_datasets(experiments.config("v3"))
    assert os8 == evaluate(model.set_output_stride(8).eval(), val_set, stats)["miou"]
    assert np.isfinite(os8)


def test_the_runs_say_which_device_trained_them(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RUNS", tmp_path)
    for seed, device in ((0, "cpu"), (1, "cuda")):
        folder = Path(experiments.config("v3", seed).out)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(f'{{"device": "{device}"}}')
    assert experiments.trained_on(["v3"], (0, 1)) == "Trained on **cpu**: 1 run; **cuda**: 1 run (seeds 0, 1)."
    assert "**not trained yet**: 2 runs" in experiments.trained_on(["v3", "v2"], (2,))


def test_training_losses_are_compared_only_between_runs_whose_losses_measure_the_same_thing(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "RUNS", tmp_path)
    for seed in (0, 1):
        for name in experiments.RUNS_SETTINGS:
            folder = Path(experiments.config(name, seed).out)
            folder.mkdir(parents=True)
            # 150 logged iterations: the first 50 (outside the window) at 9, the last 100 at a per-run level
            level = {"v3_no_pooling": 0.5, "v3": 0.4}.get(name, 1.0) + 0.1 * seed
            lines = [{"iteration": i, "loss": 9.0 if i <= 50 else level} for i in range(1, 151)]
            (folder / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    rows = {row[0]: row[1:] for row in experiments.loss_rows(seeds=(0, 1))}
    assert rows["image pooling"] == ("0.550 ± 0.071", "0.450 ± 0.071", "-0.100")
    # other targets (labels at OS 8 or 32, downsampled labels) or other terms (MSC's four outputs): not compared
    assert "atrous convolution: output stride 8 instead of 32" not in rows
    assert "loss on upsampled logits, not downsampled labels" not in rows
    assert "multi-scale inputs (MSC), trained and tested" not in rows
    assert "ASPP-L instead of LargeFOV" in rows and "fully connected CRF" not in rows


def test_processes_sharing_a_claims_folder_train_each_run_once(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(experiments, "train_or_load", lambda run: trained.append(run.out) or (None, {"miou": 0.5}))
    for _ in range(2):  # a second process with the same claims folder finds every run taken
        experiments.train_all(["v3", "v2"], (0, 1), claims=tmp_path)
    assert [Path(out).parent.name + "/" + Path(out).name for out in trained] == [
        "seed0/v3", "seed0/v2", "seed1/v3", "seed1/v2"]
    experiments.train_all(["v3"], (0,))  # without claims: every run, each time
    assert len(trained) == 5


def test_jobs_train_the_runs_side_by_side_in_fast_mode(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("MINIDL_BOOK_FAST", "1")
    monkeypatch.setenv("MINIDL_BOOK_RUNS", str(tmp_path))
    assert experiments.main(["--jobs", "2", "--only", "v3", "--seeds", "0", "1"]) == 0
    printed = sorted(line.split(":")[0] for line in capfd.readouterr().out.splitlines() if "validation mIoU" in line)
    assert printed == ["v3 seed 0", "v3 seed 1"]
    assert all((tmp_path / f"seed{seed}" / "v3" / "checkpoint.npz").exists() for seed in (0, 1))
    assert json.loads((tmp_path / "seed0" / "v3" / "config.json").read_text())["iterations"] == 10  # fast mode's
