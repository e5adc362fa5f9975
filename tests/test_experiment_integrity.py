"""The paper experiment keeps every run apart and loses nothing: injective job keys, samples that
survive a kill, generations of the right prompts, every value in the transfer table."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import analysis
import probes
from analysis.measures.evaluate import greedy_generations
from analysis.measures.values import PROFILE_COLUMNS, transfer_table
from analysis.studies.experiment import ExperimentSettings, plan
from tests.tiny import tiny_model


def profile(effects: dict[str, float], n_items: dict[str, int], target: str = "honesty") -> pd.DataFrame:
    return pd.DataFrame(
        [{"value": v, "target": v == target, "n_items": n_items[v], "effect": e} for v, e in effects.items()], columns=PROFILE_COLUMNS
    )


def test_the_transfer_table_keeps_a_value_the_first_method_lacks():
    first = profile({"honesty": 0.5, "care": 0.1}, {"honesty": 8, "care": 6})
    second = profile({"honesty": 0.4, "care": -0.2, "loyalty": 0.9}, {"honesty": 8, "care": 6, "loyalty": 5})
    table = transfer_table({"A": first, "B": second})
    assert list(table.index) == ["honesty", "loyalty", "care"]  # the target, then by the largest |effect|
    assert table.loc["loyalty", "B"] == 0.9 and pd.isna(table.loc["loyalty", "A"])
    assert table.loc["loyalty", "n_items"] == 5 and table.loc["care", "n_items"] == 6
    few = profile({"honesty": 0.4, "rare": 3.0}, {"honesty": 8, "rare": 2})
    assert "rare" not in transfer_table({"A": first, "B": few}).index  # below min_items in every method


def test_generations_of_a_batch_equal_each_prompt_alone_whatever_the_padding_side():
    model = tiny_model("llama", padding_side="right")
    prompts = ("Hi.", "A much longer prompt than the first one, so the first is padded.")
    batched = greedy_generations(model, None, coeffs=(0.0,), max_new_tokens=6, prompts=prompts)
    assert model.tokenizer.padding_side == "right"  # the tokenizer is left as it was
    alone = []
    for prompt in prompts:  # no padding at all: the reference
        text = analysis.readouts.score.render_prompt(model.tokenizer, prompt)
        ids = model.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = probes.sublayers.unwrap(model).generate(
                **ids, max_new_tokens=6, do_sample=False, pad_token_id=model.tokenizer.pad_token_id
            )
        alone.append(model.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    assert batched[0.0] == alone


@pytest.fixture(scope="module")
def tiny_plan():
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    settings = ExperimentSettings(layers=[0, 1], rank=2, seeds=(0, 1, 2), ablations=True, depths=True, lora=True)
    return plan(model, pairs, settings, [0, 1], {"baseline_layer": 1})


def test_every_job_of_every_study_has_its_own_key(tiny_plan):
    keys = [job.key for job in tiny_plan]
    assert {job.study for job in tiny_plan} == {"main", "ablation", "depth"}
    assert len({(job.study, job.method, job.seed) for job in tiny_plan}) == len(tiny_plan)
    assert len(set(keys)) == len(keys), [k for k in keys if keys.count(k) > 1]
    # a file name on any file system: no separators, nothing a case-insensitive disk would merge
    assert len({k.lower() for k in keys}) == len(keys) and not any("/" in k or "\\" in k for k in keys)


def test_the_paper_reads_a_folder_written_with_the_older_keys(tmp_path):
    from analysis.studies.layout import job_file, job_key

    (tmp_path / "profiles").mkdir()
    old = tmp_path / "profiles" / "main__innerpissa__s0.csv"  # as folders written before injective keys name it
    old.write_text("value\n")
    assert job_file(tmp_path, "profiles", "main", "InnerPiSSA", 0) == old
    new = tmp_path / "profiles" / f"{job_key('main', 'InnerPiSSA', 0)}.csv"
    new.write_text("value\n")
    assert new != old and job_file(tmp_path, "profiles", "main", "InnerPiSSA", 0) == new


def test_a_run_recorded_before_the_objective_existed_resumes_only_as_the_gap_objective_it_ran(tmp_path):
    """Runs recorded before ``objective`` was an option trained the gap; resuming them with another objective
    would mix two losses in one table, whatever the current default is."""
    from dataclasses import asdict

    from analysis.studies.experiment_settings import UNRECORDED_MEANT
    from analysis.studies.run_folder import RunFolder

    folder = RunFolder(tmp_path)
    old = {k: v for k, v in asdict(ExperimentSettings()).items() if k != "objective"}
    folder.record_options(old, resume=False)
    defaults = asdict(ExperimentSettings()) | UNRECORDED_MEANT
    folder.record_options(old | {"objective": "gap"}, resume=True, defaults=defaults)
    (tmp_path / "config.json").unlink()
    folder.record_options(old, resume=False)
    with pytest.raises(ValueError, match="objective: None then, 'shift' now"):
        folder.record_options(old | {"objective": "shift"}, resume=True, defaults=defaults)
