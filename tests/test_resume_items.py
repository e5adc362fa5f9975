"""A resume refuses items whose content changed under the same ids (experiment and sweep), naming the
items and what changed; the same items resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import analysis
import analysis.studies.experiment as experiment_module
import analysis.studies.sweep as sweep_module
import probes
from analysis.readouts.daily_dilemmas import load_daily_dilemmas
from analysis.studies.experiment import ExperimentSettings, run_experiment
from tests.tiny import tiny_model

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "daily_dilemmas" / "dilemmas_with_detail_by_action_sample.csv"


class Reached(Exception):
    """Raised where the real work would start: the run got past its checks."""


def stop(*args, **kwargs):
    raise Reached


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture
def stopped(monkeypatch):
    monkeypatch.setattr(experiment_module, "choose_layer", stop)
    monkeypatch.setattr(sweep_module, "run_sweep", stop)


def start_experiment(model, items, out, resume):
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    settings = ExperimentSettings(layers=[0, 1], rank=2, seeds=(0,), steps=1, lora=False, min_pmass=0.0)
    run_experiment(model, pairs, items, settings, out=out, resume=resume, progress=False)


def start_sweep(model, items, out, resume):
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    analysis.sweep_steerability(model, pairs, items, layers=[0, 1], kinds=["resid"], out=out, resume=resume, progress=False)


def test_a_sweep_over_items_relabelled_under_the_same_ids_is_refused_with_a_diff(model, tmp_path, stopped):
    names = load_daily_dilemmas(SAMPLE)  # values_names
    you = load_daily_dilemmas(SAMPLE, values_from="you")  # only the acting party's values: other labels
    assert [i.id for i in names] == [i.id for i in you] and [i.value_labels for i in names] != [i.value_labels for i in you]
    with pytest.raises(Reached):
        start_sweep(model, names, tmp_path, resume=False)
    with pytest.raises(Reached):  # the same items resume
        start_sweep(model, names, tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"Cannot resume .* other items under the same ids") as error:
        start_sweep(model, you, tmp_path, resume=True)
    message = str(error.value)
    changed = [i.id for i, j in zip(names, you) if i.value_labels != j.value_labels]
    assert f"{len(changed)} of {len(names)} items changed" in message and changed[0] in message
    # how it changed: dd-55-to_do loses 'accountability' (the colleague's value, not the actor's)
    assert "dd-55-to_do: labels accountability 1 then, none now" in message


def test_an_experiment_over_a_relabelled_copy_of_its_items_is_refused_with_a_diff(model, tmp_path, stopped):
    rows = [json.loads(line) for line in analysis.readouts.sets.shipped("moral_dilemmas.jsonl").read_text().splitlines()[:40]]
    (tmp_path / "first.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    rows[0]["values_aggregated"] = [*rows[0]["values_aggregated"], "thrift"]  # the same dilemmas, one more value
    (tmp_path / "edited.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    first, edited = load_daily_dilemmas(tmp_path / "first.jsonl"), load_daily_dilemmas(tmp_path / "edited.jsonl")
    assert [i.id for i in first] == [i.id for i in edited]
    with pytest.raises(Reached):
        start_experiment(model, first, tmp_path / "run", resume=False)
    with pytest.raises(Reached):
        start_experiment(model, first, tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match=r"Cannot resume .* other items under the same ids") as error:
        start_experiment(model, edited, tmp_path / "run", resume=True)
    assert "2 of 40 items changed (dd-0-to_do: labels thrift none then, 1 now; dd-0-not_to_do: labels thrift none then, -1 now)" in str(
        error.value
    )


def test_a_changed_sign_or_prompt_is_refused_and_named(model, tmp_path, stopped):
    items = analysis.moral_dilemmas()[:40]
    with pytest.raises(Reached):
        start_experiment(model, items, tmp_path, resume=False)
    flipped = [dataclasses.replace(i, sign=-i.sign) if i.id == items[0].id else i for i in items]
    with pytest.raises(ValueError, match=rf"1 of 40 items changed \({items[0].id}: sign {items[0].sign} then, {-items[0].sign} now"):
        start_experiment(model, flipped, tmp_path, resume=True)
    reworded = [dataclasses.replace(i, prompt=i.prompt + " Really?") if i.id == items[3].id else i for i in items]
    with pytest.raises(ValueError, match=rf"{items[3].id}: prompt "):
        start_experiment(model, reworded, tmp_path, resume=True)
    # a folder from before items.json: its manifest's items hash still catches the new prompt
    (tmp_path / "items.json").unlink()
    with pytest.raises(ValueError, match="manifest.json items_hash"):
        start_experiment(model, reworded, tmp_path, resume=True)
    assert json.loads((tmp_path / "config.json").read_text())["items"] == [i.id for i in items]
