"""The sweep end to end on a tiny model: outputs, row-by-row writing, resume, the CLI."""

from __future__ import annotations

import pandas as pd
import pytest

import analysis
import analysis.studies.sweep as sweep_module
import probes
import steering
from analysis import sweep_steerability
from analysis.reports.sweep_report import write_report
from steerscope.cli import main
from tests.tiny import saved_folder, tiny_model, tiny_sweep_args


def small_sweep(out, **overrides):
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=10, tokenizer=model.tokenizer, chat=True)
    options = dict(
        layers="all",
        kinds=("resid", "down"),
        methods=("mean_diff", "pca_diff"),
        coeffs=(-1, 0, 1),
        out=out,
        top_k=2,
        stride=2,
        progress=False,
        min_pmass=0.0,
    )
    return sweep_steerability(model, pairs, analysis.dilemmas()[:4], **(options | overrides))


def test_short_sweep_writes_every_output(tmp_path):
    result = small_sweep(tmp_path)
    assert not (tmp_path / "summary.md").exists()  # a study returns its result; its report is written on request
    write_report(result, ("html",))
    for name in (
        "results.csv",
        "separation.csv",
        "predictions.csv",
        "nulls.csv",
        "summary.md",
        "summary.tex",
        "report.html",
        "config.json",
        "manifest.json",
        "split.json",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    results = pd.read_csv(tmp_path / "results.csv")
    configs = {(r.layer, r.kind) for r in results.itertuples()}
    assert len(results) == 2 * len(configs) and results["error"].isna().all()
    assert {(0, "resid"), (2, "resid")} <= configs  # the stride-2 layer profile of the first kind
    assert set(pd.read_csv(tmp_path / "separation.csv")["kind"]) == {"resid", "down"}
    assert len(pd.read_csv(tmp_path / "nulls.csv")) == len(configs)  # one random direction per dosed (layer, kind)
    assert len(list((tmp_path / "doses").glob("*.csv"))) == len(results) + len(configs)
    assert len(list((tmp_path / "directions").glob("*.safetensors"))) == len(results)
    assert results["null_item_slope"].notna().all() and results["predicted_effect"].notna().all()
    for stem in ("steerability_score", "dose_response_top", "separation_auroc", "direction_cosines"):
        assert (tmp_path / "figures" / f"{stem}.html").exists(), stem
    summary = (tmp_path / "summary.md").read_text()
    assert "| layer | kind | method | item_slope | item_slope_lo | item_slope_hi | p_value | null_item_slope |" in summary
    assert "chosen on validation items" in summary and "auroc_null" in summary
    assert result.cosines is not None and set(result.cosines["method_a"]) == {"mean_diff", "pca_diff"}


def test_interrupted_sweep_keeps_rows_and_resume_skips_them(tmp_path, monkeypatch):
    original = sweep_module.dose_response
    calls = []

    def failing_after_four(*args, **kwargs):
        calls.append(1)
        if len(calls) > 4:
            raise KeyboardInterrupt  # the user stops the run
        return original(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "dose_response", failing_after_four)
    with pytest.raises(KeyboardInterrupt):
        small_sweep(tmp_path)
    # null, method, method, null: the finished rows were written as they finished
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2 and len(pd.read_csv(tmp_path / "nulls.csv")) == 2

    with pytest.raises(FileExistsError, match="resume"):
        small_sweep(tmp_path)

    calls.clear()
    monkeypatch.setattr(sweep_module, "dose_response", lambda *a, **k: calls.append(1) or original(*a, **k))
    result = small_sweep(tmp_path, resume=True)
    assert len(calls) >= 1 and len(result.results) + len(pd.read_csv(tmp_path / "nulls.csv")) == 4 + len(calls)
    assert len(result.results.drop_duplicates(["layer", "kind", "method"])) == len(result.results)


def test_a_failing_configuration_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from steering import directions

    def broken(states, **options):
        raise RuntimeError("this method is broken")

    monkeypatch.setitem(directions.METHODS, "broken", directions.Method("broken", broken))
    result = small_sweep(tmp_path, methods=("broken", "mean_diff"), kinds=("resid",), top_k=1, stride=3)
    write_report(result, ("html",))
    failed = result.results[result.results["error"].notna()]
    assert set(failed["method"]) == {"broken"} and failed["error"].str.contains("this method is broken").all()
    assert result.results[result.results["method"] == "mean_diff"]["score"].notna().all()
    assert "Failed configurations" in (tmp_path / "summary.md").read_text()


def test_cli_sweep_on_a_local_model_folder(tmp_path, capsys):
    folder = saved_folder(tiny_model("llama"), tmp_path / "tiny-llama")
    assert main(tiny_sweep_args(folder, tmp_path / "run", "mean_diff", "--coeffs=-1,0,1", "--stride", "2")) == 0
    assert "| layer | kind | method | item_slope |" in capsys.readouterr().out
    assert (tmp_path / "run" / "report.html").exists()
    options = ("--stride", "3", "--no-null")
    assert main(tiny_sweep_args(folder, tmp_path / "predicted", "mean_diff", *options)) == 0
    assert main(tiny_sweep_args(folder, tmp_path / "all", "mean_diff", *options, "--select", "all")) == 0
    assert len(pd.read_csv(tmp_path / "predicted" / "results.csv")) <= 2  # the top (layer, kind) and layer 0 of the profile
    assert sorted(pd.read_csv(tmp_path / "all" / "results.csv")["layer"]) == [0, 1, 2]  # every layer


@pytest.mark.slow
@pytest.mark.skipif(not analysis.plots.static_export_available(), reason="needs kaleido and a Chromium (scripts/setup.sh installs both)")
def test_cli_figures_regenerates_png_and_svg_of_the_expected_size(tmp_path):
    import struct

    small_sweep(tmp_path / "run")
    assert main(["figures", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "figures")]) == 0
    for stem in ("steerability_score", "dose_response_top", "separation_auroc", "direction_cosines"):
        png = (tmp_path / "figures" / f"{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        figure = analysis.report.sweep_figures(analysis.studies.layout.load_sweep(tmp_path / "run"))[stem]
        assert (width, height) == (2 * figure.layout.width, 2 * figure.layout.height)
        svg = (tmp_path / "figures" / f"{stem}.svg").read_text()
        assert svg.lstrip().startswith("<svg") and len(svg) > 1000
    assert (tmp_path / "figures" / "sweep_summary.tex").read_text().startswith("\\begin{table}")


def test_cli_figures_without_chromium_writes_html_and_tables_and_says_so_once(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    from analysis.reports import figure_files

    small_sweep(tmp_path / "run")
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no Chromium to be found
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(figure_files, "warned_no_static_export", False)
    with pytest.warns(UserWarning, match="export needs kaleido and a Chromium") as caught:
        assert main(["figures", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "figures")]) == 0
    assert sum("Chromium" in str(w.message) for w in caught) == 1
    figures = tmp_path / "figures"
    assert not list(figures.glob("*.png")) and not list(figures.glob("*.svg"))
    for stem in ("steerability_score", "dose_response_top", "separation_auroc", "direction_cosines"):
        assert (figures / f"{stem}.html").stat().st_size > 0, stem
    assert (figures / "sweep_summary.md").exists() and (figures / "sweep_summary.tex").exists()


def test_modes_become_rows_of_their_own(tmp_path):
    result = small_sweep(tmp_path, modes=("add", "ablate", "conditional"), methods=("mean_diff",), null_direction=False)
    rows = result.results
    assert set(rows["method"]) == {"mean_diff", "mean_diff+ablate", "mean_diff+conditional"}
    assert "error" not in rows or rows["error"].isna().all()
    assert (rows.groupby(["layer", "kind"]).size() == 3).all()
    ablate = rows[rows["method"] == "mean_diff+ablate"].iloc[0]
    dose = result.doses[f"L{int(ablate.layer):02d}_{ablate.kind}_mean_diff+ablate"]
    unsteered = analysis.score_items(
        tiny_model("llama"), [it for it in analysis.dilemmas()[:4] if it.id in set(dose["item"])], min_pmass=0.0
    )
    at_zero = dose[dose["coeff"] == 0].set_index("item")["logratio"]
    assert (at_zero.loc[unsteered["item"]].to_numpy() == unsteered["logratio"].to_numpy()).all()
    with pytest.raises(ValueError, match="choose from add, ablate, clamp, conditional"):
        small_sweep(tmp_path / "bad", modes=("scale",))


def test_a_sweep_with_a_cost_budget_compares_every_direction_at_that_cost(tmp_path):
    from analysis.measures.matched_cost import cost_texts
    from analysis.studies.layout import config_name
    from steering.calibrate import neutral_kl

    result = small_sweep(tmp_path, cost_budget=0.02, top_k=1, stride=99, methods=("mean_diff",))
    write_report(result, ("html",))
    results = pd.read_csv(tmp_path / "results.csv")
    assert results["error"].isna().all() and results["budget_reached"].all()
    model = tiny_model("llama")
    for row in results.itertuples():
        name = config_name(row.layer, row.kind, row.method)
        direction = steering.load_directions(tmp_path / "directions" / f"{name}.safetensors")[0]
        # the coefficient costs the budget on the calibration paragraphs, by the KL measured afresh
        calibration, _ = cost_texts()
        kl = neutral_kl(model, direction, [row.coeff_at_budget, -row.coeff_at_budget], calibration)
        assert 0.02 <= sum(kl) / 2 <= 0.02 * 1.03
        # the effect at the budget from the dose file by hand: half the change from −c* to +c*, per dilemma
        dose = pd.read_csv(tmp_path / "doses" / f"{name}.csv")
        wide = dose.pivot_table(index="item", columns="coeff", values="readout")
        plus = min(wide.columns, key=lambda c: abs(c - row.coeff_at_budget))
        half = (wide[plus] - wide[-plus]) / 2
        groups = (
            dose.groupby("item")["dilemma"].first().fillna(pd.Series(half.index, index=half.index)) if "dilemma" in dose else half.index
        )
        assert row.effect_at_budget == pytest.approx(half.groupby(groups).mean().mean())
        # the per-unit-c numbers still read c = −1, 0, +1 only
        assert row.effect == pytest.approx(((wide[1.0] - wide[-1.0]) / 2).mean())
    assert results["null_effect_at_budget"].notna().all()
    assert "effect at budget" in (tmp_path / "summary.md").read_text()
