"""The paper's experiment end to end on a tiny model, and the value-profile arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import analysis
import probes
from analysis.measures.values import side_effects, value_profile
from analysis.studies.experiment import ABLATIONS, ExperimentSettings, run_experiment
from analysis.studies.layout import job_key, read_runs
from steerscope.cli import main
from tests.tiny import checksum, tiny_model


def test_a_uniform_shift_towards_yes_moves_no_value():
    items = analysis.moral_dilemmas()
    rng = np.random.default_rng(0)
    base = {item.id: rng.normal(0, 2) for item in items}
    rows = [
        {"item": item.id, "coeff": c, "logratio": base[item.id] + 0.7 * c, "valid": True, "nll": 2.0}
        for item in items
        for c in (-1.0, 0.0, 1.0)
    ]  # every answer moves towards "Yes" alike
    profile = value_profile(pd.DataFrame(rows), items, target="honesty")
    assert len(profile) > 20 and profile["effect"].abs().max() < 1e-9
    assert side_effects(profile) < 1e-9


def test_value_profiles_read_each_value_with_its_labels():
    items = analysis.moral_dilemmas()
    honesty = {i.id: i.value_labels["honesty"] for i in items if "honesty" in i.value_labels}
    rows = [
        {"item": item.id, "coeff": c, "logratio": c * honesty.get(item.id, 0.0), "valid": True} for item in items for c in (-1.0, 0.0, 1.0)
    ]  # moves exactly the honest answers, by 1 per unit c
    profile = value_profile(pd.DataFrame(rows), items, target="honesty").set_index("value")
    assert profile.loc["honesty", "effect"] == pytest.approx(1.0) and profile.loc["honesty", "target"]
    assert profile.loc["honesty", "n_items"] == len(honesty)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    model = tiny_model("llama")
    before = (checksum(model), [name for name, _ in probes.sublayers.unwrap(model).named_modules()])
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    items = analysis.moral_dilemmas()[:40]
    settings = ExperimentSettings(
        layers=[0, 1],
        kinds=("o", "down"),
        rank=2,
        seeds=(0, 1),
        steps=2,
        coeffs=(-1, 0, 1, 2),
        ablations=True,
        depths=True,
        generation_tokens=4,
        min_pmass=0.0,
    )
    run_experiment(model, pairs, items, settings, out=out, progress=False)
    # every adapter was detached: the model ends exactly as it began
    assert (checksum(model), [name for name, _ in probes.sublayers.unwrap(model).named_modules()]) == before
    assert all(p.requires_grad for p in probes.sublayers.unwrap(model).parameters())
    analysis.paper.write_paper(out, formats=("html",))
    return out, items


def test_every_table_and_figure_is_written_from_test_items_only(experiment):
    out, items = experiment
    for name in (
        "table1.md",
        "table1.tex",
        "table2.md",
        "transfer.md",
        "figure1_dose.html",
        "figure2_depth.html",
        "pareto.html",
        "transfer.html",
        "training_curves.html",
        "generations.md",
        "split.json",
        "manifest.json",
        "choices.json",
        "labels.json",
    ):
        assert (out / name).stat().st_size > 0, name
    split = json.loads((out / "split.json").read_text())
    assert not set(split["validation"]) & set(split["test"])
    assert set(split["validation"]) | set(split["test"]) == {i.id for i in items}
    for dose in (out / "doses").glob("*.csv"):
        assert set(pd.read_csv(dose)["item"]) == set(split["test"]), dose.name
    choices = json.loads((out / "choices.json").read_text())
    assert choices["baseline_layer"] in (0, 1) and "validation" in choices["rule"]


def test_trainable_rows_have_every_seed_and_their_spread(experiment):
    out, items = experiment
    runs = pd.read_csv(out / "runs.csv")
    assert runs["error"].isna().all(), runs["error"].dropna().tolist()
    table1 = pd.read_csv(out / "table1.csv").set_index("method")
    assert {"InnerPiSSA", "prompting", "LoRA"} <= set(table1.index)
    assert all(any(m.startswith(prefix) for m in table1.index) for prefix in ("PCA", "mean_diff", "S-space", "random"))
    assert table1.loc["InnerPiSSA", "seeds"] == 2 and np.isfinite(table1.loc["InnerPiSSA", "seed_sd"])
    assert table1.loc["prompting", "seeds"] == 1 and table1.loc["prompting", "delta_nll"] == 0.0
    # by hand from the dose files (every item valid here, min_pmass 0): per item (r(+1) − r(−1)) / 2 of the
    # honesty-signed readout, averaged per dilemma, then over dilemmas; one number per seed
    labels = {i.id: i.value_labels["honesty"] for i in items if "honesty" in i.value_labels}
    per_seed = []
    for seed in (0, 1):
        dose = pd.read_csv(out / "doses" / f"{job_key('main', 'InnerPiSSA', seed)}.csv")
        dose = dose[dose["item"].isin(labels)]
        wide = dose.pivot_table(index="item", columns="coeff", values="logratio").mul(pd.Series(labels), axis=0)
        half = ((wide[1.0] - wide[-1.0]) / 2).dropna()
        per_seed.append(half.groupby(dose.groupby("item")["dilemma"].first()).mean().mean())
    assert table1.loc["InnerPiSSA", "effect"] == pytest.approx(np.mean(per_seed))
    assert table1.loc["InnerPiSSA", "seed_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    table2 = pd.read_csv(out / "table2.csv")
    assert len(table2) == 2 + len(ABLATIONS) and "drop_vs_full" in table2  # full, no-gradient (PCA) and every ablation
    full = table2[table2["method"] == "full InnerPiSSA"]["effect"].iloc[0]
    no_coherence = table2[table2["method"] == "no coherence term"].iloc[0]
    assert no_coherence["drop_vs_full"] == pytest.approx(1 - no_coherence["effect"] / full)
    assert (out / "adapters" / job_key("main", "InnerPiSSA", 0) / "adapter.safetensors").exists()


def hand_budget_changes(out, items, method, seed, coeff):
    """Per dilemma, half the honesty-signed readout change from −c* to +c*, from a dose file by hand."""
    labels = pd.Series({i.id: i.value_labels["honesty"] for i in items if "honesty" in i.value_labels})
    dose = pd.read_csv(out / "doses" / f"{job_key('main', method, seed)}.csv")
    dose = dose[dose["item"].isin(labels.index)]
    wide = dose.pivot_table(index="item", columns="coeff", values="logratio").mul(labels, axis=0)
    plus = min(wide.columns, key=lambda c: abs(c - coeff))
    minus = min(wide.columns, key=lambda c: abs(c + coeff))
    assert plus == pytest.approx(coeff) and minus == pytest.approx(-coeff)  # ±c* were scored
    half = ((wide[plus] - wide[minus]) / 2).dropna()
    return half.groupby(dose.groupby("item")["dilemma"].first()).mean()


def test_table1_compares_methods_at_the_budget_paired_over_dilemmas(experiment):
    out, items = experiment
    runs = pd.read_csv(out / "runs.csv")
    main = runs[runs["study"] == "main"]
    assert main["coeff_at_budget"].gt(0).all() and main["kl_at_1"].ge(0).all()
    prompting = main[main["method"] == "prompting"].iloc[0]
    assert prompting["coeff_at_budget"] == 1.0 and not prompting["budget_reached"] and prompting["kl_at_1"] > 0  # a persona costs
    table1 = pd.read_csv(out / "table1.csv").set_index("method")
    changes = {}
    for method, group in main.groupby("method"):
        seeds = [None if pd.isna(s) else int(s) for s in group["seed"]]
        per_seed = [hand_budget_changes(out, items, method, seed, c) for seed, c in zip(seeds, group["coeff_at_budget"])]
        changes[method] = pd.concat(per_seed, axis=1, join="inner").mean(axis=1)
        test = stats.ttest_1samp(changes[method], 0.0)
        assert table1.loc[method, "effect_at_budget"] == pytest.approx(changes[method].mean()), method
        assert table1.loc[method, "p_at_budget"] == pytest.approx(test.pvalue), method
    both = pd.concat([changes["InnerPiSSA"], changes["prompting"]], axis=1, join="inner")
    assert table1.loc["InnerPiSSA", "vs_prompting"] == pytest.approx((both[0] - both[1]).mean())
    assert table1.loc["InnerPiSSA", "vs_prompting_p"] == pytest.approx(stats.ttest_rel(both[0], both[1]).pvalue)
    directions = [m for m in changes if m.startswith(("PCA", "mean_diff", "S-space"))]
    best = max(directions, key=lambda m: changes[m].mean())
    assert table1["best_direction"].iloc[0] == best
    assert "0.05 nats/token" in (out / "table1.md").read_text()  # the budget is in the caption


def test_trained_rows_record_the_budget_chosen_on_held_out_pairs(experiment):
    out, _ = experiment
    runs = pd.read_csv(out / "runs.csv")
    trained = runs[runs["method"].isin(["InnerPiSSA", "LoRA"])]
    assert len(trained) and trained["best_step"].between(0, 2).all() and trained["steps_run"].le(2).all()
    assert trained["val_loss"].notna().all() and trained["weight_change"].ge(0).all()
    assert trained["direction_vote"].between(0, 1).all() and trained["direction_mean_diff_cos"].between(-1, 1).all()
    assert runs[runs["method"] == "prompting"]["best_step"].isna().all()  # nothing trained


def test_held_out_pairs_are_disjoint_seeded_and_skipped_when_too_few():
    from analysis.studies.experiment import held_out_pairs

    pairs = [(f"yes {i}", f"no {i}") for i in range(8)]
    train, val = held_out_pairs(pairs, 0.25, seed=0)
    assert len(val) == 2 and len(train) == 6 and not set(train) & set(val) and set(train) | set(val) == set(pairs)
    assert held_out_pairs(pairs, 0.25, seed=0) == (train, val)
    assert held_out_pairs(pairs[:3], 0.25, seed=0) == (pairs[:3], [])
    assert held_out_pairs(pairs, 0.0, seed=0) == (pairs, [])


def test_paper_rebuilds_the_tables_from_the_folder(experiment, tmp_path):
    out, _ = experiment
    code = main(["paper", "--run", str(out), "--out", str(tmp_path)])
    assert code == 0
    assert (tmp_path / "table1.md").read_text() == (out / "table1.md").read_text()


def test_a_resumed_experiment_runs_nothing_twice(experiment, tmp_path, monkeypatch):
    """Seedless baselines (prompting, PCA, ...) are stored with an empty seed cell; a resume must
    read them back as finished, not run and append them again."""
    import shutil

    import analysis.studies.experiment as experiment_module

    out, items = experiment
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = pd.read_csv(copy / "runs.csv")
    assert before["seed"].isna().any()  # the baselines have no seed
    ran: list[str] = []
    monkeypatch.setattr(experiment_module, "run_job", lambda model, job, *args: ran.append(job.key))
    settings = json.loads((out / "config.json").read_text())
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer)
    overrides = {k: v for k, v in settings.items() if k in ExperimentSettings.__dataclass_fields__}
    run_experiment(model, pairs, items, ExperimentSettings(**overrides), out=copy, resume=True, progress=False)
    assert ran == []
    after = pd.read_csv(copy / "runs.csv")
    assert len(after) == len(before) and not after.duplicated(["study", "method", "seed"]).any()


def test_a_repeated_row_in_an_older_folder_counts_once(experiment, tmp_path):
    out, _ = experiment
    runs = pd.read_csv(out / "runs.csv")
    repeated = pd.concat([runs, runs[runs["method"] == "prompting"]], ignore_index=True)  # as older resumes wrote it
    repeated.to_csv(tmp_path / "runs.csv", index=False)
    rows = read_runs(tmp_path)
    assert len(rows) == len(runs)
    assert analysis.paper.table1(out, rows, "honesty").set_index("method").loc["prompting", "seeds"] == 1


def test_every_ablation_changes_the_full_method():
    """An ablation equal to the full method would show a 'drop' made of noise alone."""
    from dataclasses import fields

    from analysis.studies.experiment import ABLATIONS
    from steering.adapters.innerpissa import AdapterConfig
    from steering.adapters.reprpo import ReprPOConfig

    adapter_defaults = {f.name: f.default for f in fields(AdapterConfig)}
    training_defaults = {f.name: f.default for f in fields(ReprPOConfig)}
    for name, (options, overrides) in ABLATIONS.items():
        assert set(options) <= set(adapter_defaults) and set(overrides) <= set(training_defaults), name
        changed = [k for k, v in options.items() if adapter_defaults[k] != v] + [
            k for k, v in overrides.items() if training_defaults[k] != v
        ]
        assert changed, f"{name} is the full method"


def test_table2_names_the_settings_the_full_method_ran_with(experiment):
    out, _ = experiment
    saved = json.loads((out / "adapters" / job_key("main", "InnerPiSSA", 0) / "adapter.json").read_text())
    note = (out / "table2.md").read_text().strip().splitlines()[-1]
    assert f"S scaling '{saved['scale_mode']}'" in note and f"'{saved['basis']}' bases" in note
    assert ("with V rotation" if saved["rotate_v"] else "no V rotation") in note
    assert f"ReprPO objective '{json.loads((out / 'config.json').read_text())['objective']}'" in note
