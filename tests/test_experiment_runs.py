"""A small paper experiment on a tiny model, killed, resumed, starved of valid items or failing
everywhere: the samples of finished runs survive, and the tables are written with what exists."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

import analysis
import analysis.studies.experiment as experiment_module
import probes
from analysis.studies.experiment import ExperimentSettings, run_experiment
from steerscope.cli import main
from tests.tiny import saved_folder, tiny_model

SETTINGS = dict(layers=[0, 1], rank=2, seeds=(0,), steps=1, lora=False, capability=False, generation_tokens=3, coeffs=(-1, 0, 1))


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def items():
    return analysis.moral_dilemmas()[:24]


def run(model, items, out, resume=False, **changes):
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    settings = ExperimentSettings(**(SETTINGS | {"min_pmass": 0.0} | changes))
    return run_experiment(model, pairs, items, settings, out=out, resume=resume, progress=False)


@pytest.fixture(scope="module")
def uninterrupted(model, items, tmp_path_factory):
    return run(model, items, tmp_path_factory.mktemp("whole"))


def test_a_killed_and_resumed_experiment_keeps_every_runs_samples(model, items, uninterrupted, tmp_path, monkeypatch):
    real = experiment_module.run_job

    def killed_at_pca(model, job, *args):
        if job.method.startswith("PCA"):
            raise KeyboardInterrupt  # as kill -9: nothing after this point runs
        return real(model, job, *args)

    monkeypatch.setattr(experiment_module, "run_job", killed_at_pca)
    with pytest.raises(KeyboardInterrupt):
        run(model, items, tmp_path)
    finished = pd.read_csv(tmp_path / "runs.csv")["method"].tolist()
    assert finished == ["InnerPiSSA", "prompting"]
    assert "## InnerPiSSA (seed 0)" in (tmp_path / "generations.md").read_text()  # written with its row
    monkeypatch.setattr(experiment_module, "run_job", real)
    run(model, items, tmp_path, resume=True)
    whole = (uninterrupted / "generations.md").read_text()
    pca = next(m for m in pd.read_csv(uninterrupted / "runs.csv")["method"] if m.startswith("PCA"))
    assert [line for line in whole.splitlines() if line.startswith("## ")] == ["## InnerPiSSA (seed 0)", "## prompting", f"## {pca}"]
    assert (tmp_path / "generations.md").read_text() == whole


def test_without_valid_items_the_run_warns_and_the_tables_say_what_is_missing(model, items, tmp_path):
    with pytest.warns(UserWarning, match=r"InnerPiSSA \(seed 0\): no test item labelled 'honesty' kept .*min_pmass=1.0"):
        run(model, items, tmp_path, min_pmass=1.0)  # no item's P(yes)+P(no) reaches 1
    written = analysis.paper.write_paper(tmp_path, formats=("html",))
    assert tmp_path / "table1.md" in written
    table1 = pd.read_csv(tmp_path / "table1.csv")
    assert set(table1["method"]) == set(pd.read_csv(tmp_path / "runs.csv")["method"]) and table1["effect"].isna().all()
    text = (tmp_path / "table1.md").read_text()
    runs = len(pd.read_csv(tmp_path / "runs.csv"))  # InnerPiSSA and the five baselines
    assert f"{runs} run(s) have no effect: no valid test item (min_pmass=1.0)" in text and "--min-pmass" in text


def test_when_every_run_fails_the_tables_are_written_and_name_the_error(model, items, tmp_path, monkeypatch):
    def boom(*args):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(experiment_module, "run_job", boom)
    run(model, items, tmp_path)
    analysis.paper.write_paper(tmp_path, formats=("html",))
    text = (tmp_path / "table1.md").read_text()
    runs = len(pd.read_csv(tmp_path / "runs.csv"))
    assert runs == 6 and f"No run finished: {runs} run(s) failed" in text and "RuntimeError: out of memory (simulated)" in text
    assert pd.read_csv(tmp_path / "table1.csv").empty


def test_the_cli_passes_min_pmass_and_exits_1_when_every_run_failed(model, items, tmp_path, monkeypatch, capsys):
    folder = saved_folder(model, tmp_path / "model")
    rows = [json.loads(line) for line in analysis.readouts.sets.shipped("moral_dilemmas.jsonl").read_text().splitlines()[:24]]
    (tmp_path / "dd.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    monkeypatch.setattr(experiment_module, "run_job", lambda *args: (_ for _ in ()).throw(RuntimeError("simulated")))
    options = ["--model", folder, "--items", str(tmp_path / "dd.jsonl"), "--layers", "0,1", "--rank", "2", "--steps", "1"]
    code = main(["train", *options, "--seeds", "0", "--no-lora", "--pairs", "8", "--min-pmass", "0.05", "--out", str(tmp_path / "run")])
    assert code == 1 and "No run finished" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["min_pmass"] == 0.05
    shutil.rmtree(tmp_path / "run")
