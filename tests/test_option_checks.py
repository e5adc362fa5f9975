"""Options are checked before any work starts, with a message that names the option and the fix."""

from __future__ import annotations

import pytest

import analysis
import analysis.studies.experiment as experiment_module
import analysis.studies.sweep as sweep_module
import probes
from analysis.studies.experiment import ExperimentSettings, run_experiment
from steerscope.cli import main
from tests.tiny import tiny_model


class Reached(Exception):
    """Raised where the real work would start."""


def stop(*args, **kwargs):
    raise Reached


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--rank", "0"], "--rank: '0': the adapters' rank, a whole number of at least 1"),
        (["train", "--steps", "0"], "--steps: '0': training steps, a whole number of at least 1"),
        (["paper", "--batch-pairs", "0"], "--batch-pairs: '0': pairs per training step"),
        (["train", "--min-pmass", "1.5"], "--min-pmass: '1.5': the least P(positive)+P(negative)"),
        (["train", "--lr=-1e-3"], "--lr: '-1e-3': the learning rate, a positive number"),
        (["sweep", "--top-k", "0"], "--top-k: '0': how many (layer, kind) to dose"),
        (["sweep", "--stride", "0"], "--stride: '0': the layer stride of the profile"),
        (["sweep", "--test-fraction", "1"], "--test-fraction: '1': the share of items held out"),
        (["sweep", "--pairs", "0"], "--pairs: '0': contrastive pairs"),
    ],
)
def test_cli_options_out_of_range_are_refused_before_any_work(argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("steerscope.cli.load_from_args", stop)  # never load the embedded model here
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_fractional_seeds_are_refused_not_truncated(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("steerscope.cli.load_from_args", stop)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--seeds", "1.7", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2 and "--seeds '1.7': give comma-separated whole numbers" in capsys.readouterr().err


def start(model, tmp_path, **changes):
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    settings = ExperimentSettings(**({"layers": [0, 1], "rank": 2, "seeds": (0,), "steps": 1, "lora": False} | changes))
    run_experiment(model, pairs, analysis.moral_dilemmas()[:24], settings, out=tmp_path / "run", progress=False)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"kinds": ("resid",)}, "InnerPiSSA adapts weights; 'resid' has none"),
        ({"rank": 0}, "rank=0: the adapters' rank, a whole number of at least 1"),
        ({"rank": 10_000}, "rank=10000 is larger than the 'o' weight"),
        ({"steps": 0}, "steps=0: training steps"),
        ({"seeds": (1.7,)}, "seeds=(1.7,): give whole-number training seeds"),
        ({"seeds": ()}, "seeds=(): give whole-number training seeds"),
        ({"min_pmass": float("nan")}, "min_pmass=nan"),
        ({"lr": 0.0}, "lr=0.0: the learning rate must be a positive number"),
        ({"objective": "midpoint"}, "objective='midpoint': what ReprPO pushes along its frozen direction"),
        ({"coeffs": (0.0, 1.0, 2.0)}, "must include -1, 0 and +1"),
        ({"target": "honestly"}, "labelled with the value 'honestly' .did you mean 'honesty'"),
    ],
)
def test_experiment_options_are_checked_before_the_baselines_run(model, tmp_path, monkeypatch, changes, expected):
    monkeypatch.setattr(experiment_module, "choose_layer", stop)  # the first piece of work
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        start(model, tmp_path, **changes)
    assert not (tmp_path / "run").exists()


def test_the_sweep_names_top_k_and_stride_not_texts_per_forward_pass(model, monkeypatch):
    monkeypatch.setattr(sweep_module, "run_sweep", stop)
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    for name, meaning in (("top_k", "how many (layer, kind) to dose"), ("stride", "the layer stride of the profile")):
        with pytest.raises(ValueError) as error:
            analysis.sweep_steerability(model, pairs, analysis.dilemmas(), layers=[0], kinds=["resid"], **{name: 0})
        assert f"{name}=0: {meaning}" in str(error.value) and "texts per forward pass" not in str(error.value)


def test_the_cli_offers_exactly_the_objectives_reprpo_trains_with_the_same_default(tmp_path, capsys, monkeypatch):
    import argparse
    from dataclasses import fields

    from steering.adapters.reprpo import OBJECTIVES, ReprPOConfig
    from steerscope.cli import add_experiment_options

    monkeypatch.setattr("steerscope.cli.load_from_args", stop)
    with pytest.raises(SystemExit):
        main(["train", "--objective", "midpoint", "--out", str(tmp_path / "run")])
    assert "--objective: invalid choice: 'midpoint' (choose from " + ", ".join(map(repr, OBJECTIVES)) in capsys.readouterr().err
    parser = argparse.ArgumentParser()
    add_experiment_options(parser, full=False)
    default = next(f.default for f in fields(ReprPOConfig) if f.name == "objective")
    assert parser.parse_args([]).objective == ExperimentSettings().objective == default
