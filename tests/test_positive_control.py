"""The training positive control: `steerscope train --concept sentiment` trains on sentiment pairs,
prompts with sentiment personas and judges the change of sentiment on readouts labelled as that value."""

from __future__ import annotations

import contextlib
import json

import analysis
import analysis.studies.experiment as experiment_module
import probes
from analysis.readouts.sets import shipped
from steerscope.cli import main
from tests.tiny import saved_folder, tiny_model


def test_sentiment_readouts_are_labelled_for_sentiment_by_their_own_sign():
    rows = [json.loads(line) for line in shipped("sentiment_readouts.jsonl").read_text().splitlines() if line.strip()]
    items = analysis.concept_items("sentiment")
    assert [item.id for item in items] == [row["id"] for row in rows]
    assert [item.value_labels for item in items] == [{"sentiment": int(row.get("sign", 1))} for row in rows]
    assert len(analysis.readouts.daily_dilemmas.for_value(items, "sentiment")) == len(rows)


def test_labelled_for_keeps_an_existing_label_and_leaves_unsigned_items_unlabelled():
    item = analysis.dilemmas()[0]
    unsigned = analysis.ReadoutItem("x", "p", "", ("a",), ("b",), sign=0.0)
    labelled = analysis.labelled_for([item, unsigned], "honesty")
    assert labelled[1].value_labels == {}
    assert labelled[0].value_labels["honesty"] == (item.value_labels.get("honesty") or int(item.sign))


def test_train_with_concept_sentiment_uses_its_pairs_personas_and_target(tmp_path, monkeypatch):
    model = tiny_model("llama")
    folder = saved_folder(model, tmp_path / "model")
    seen = {}
    real_plan = experiment_module.plan

    def recording_plan(model, pairs, settings, layers, choice):
        seen["pairs"], seen["settings"] = pairs, settings
        seen["jobs"] = real_plan(model, pairs, settings, layers, choice)
        return []  # nothing to run: what was planned is what this test reads

    monkeypatch.setattr(experiment_module, "plan", recording_plan)
    options = ["--model", folder, "--concept", "sentiment", "--layers", "0,1", "--rank", "2", "--steps", "1", "--seeds", "0"]
    with contextlib.suppress(SystemExit):  # no run was planned, so the CLI ends by saying the folder holds none
        main(["train", *options, "--no-lora", "--pairs", "8", "--min-pmass", "0", "--out", str(tmp_path / "run")])
    settings = seen["settings"]
    assert (settings.target, settings.concept) == ("sentiment", "sentiment")
    expected_pairs = probes.sentiment_pairs(n=8, tokenizer=model.tokenizer, chat=True, seed=0)
    assert [(p.positive, p.negative) for p in seen["pairs"]] == [(p.positive, p.negative) for p in expected_pairs]
    (prompting,) = [job for job in seen["jobs"] if job.method == "prompting"]
    persona = json.loads((probes.pairs.resources.files("probes.data") / "sentiment.json").read_text())["prompting"]
    intervention = prompting.build()[0]
    assert [intervention.positive, intervention.negative] == persona
    recorded_items = json.loads((tmp_path / "run" / "items.json").read_text())
    assert recorded_items and all("sentiment" in json.dumps(item) for item in recorded_items.values())
