"""The pages a researcher opens first, checked in a real browser (Debian's headless Chromium):
every figure draws, no JavaScript error, nothing wider than a 1400 px window, no text cut off, under a
mode bar or over other text; the same for the exported SVGs and the standalone figure pages.

Screenshots (the whole page and its first screen) go to ``$STEERSCOPE_ARTIFACTS`` or the test's tmp path;
the paths are printed (``pytest -s``).
"""

from __future__ import annotations

import re

import pytest

import analysis
import probes
from analysis import sweep_steerability
from analysis.reports.sweep_report import write_report
from tests.browser import artifacts_dir, no_browser_reason, open_page
from tests.tiny import tiny_model

pytestmark = pytest.mark.skipif(no_browser_reason() is not None, reason=f"browser check {no_browser_reason()}")
WIDTH = 1400


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory):
    """A tiny sweep with enough configurations for every figure (predictors need 8), exported as PNG and SVG."""
    out = tmp_path_factory.mktemp("sweep")
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=8, tokenizer=model.tokenizer, chat=True)
    result = sweep_steerability(
        model,
        pairs,
        analysis.dilemmas()[:6],
        layers="all",
        kinds=("resid", "down"),
        methods=("mean_diff", "pca_diff"),
        coeffs=(-1, 0, 1),
        out=out,
        top_k=3,
        stride=1,
        progress=False,
        min_pmass=0.0,
    )
    write_report(result, ("html", "png", "svg"))
    return out


def assert_reads_well(seen, figures_expected: int) -> None:
    assert seen.figures == figures_expected and seen.drawn == seen.figures, f"{seen.drawn} of {seen.figures} figures drew"
    assert seen.errors == [], f"JavaScript errors: {seen.errors}"
    assert seen.scroll_width <= WIDTH, f"the page is {seen.scroll_width} px wide in a {WIDTH} px window"
    assert seen.covered == [], f"under the mode bar: {seen.covered}"
    assert seen.cut == [], f"cut off: {seen.cut}"
    assert seen.collide == [], f"drawn over each other: {seen.collide}"


def test_the_sweep_report_shows_its_answer_first_and_every_figure(sweep_folder, tmp_path):
    page = sweep_folder / "report.html"
    shot = artifacts_dir(tmp_path) / "sweep_report.png"
    seen = open_page(page, WIDTH, screenshot=shot)
    print(f"\nscreenshots: {shot} and {shot.with_name(shot.stem + '_first_screen.png')}")
    figures = re.findall(r"<figure>", page.read_text())
    assert_reads_well(seen, len(figures))
    assert {"steerability_score", "dose_response_top", "separation_auroc", "predictors", "direction_cosines"} <= {
        path.stem for path in (sweep_folder / "figures").glob("*.svg")
    }
    # the first screen holds the answer: the best configuration with its interval, p and Holm p, and the counts
    first = seen.first_screen
    assert "Answer" in first and re.search(r"Best of \d+: L\d+ \w+ \w+: \S+ nats per unit c \[95 % CI", first)
    assert "Holm" in first and "beat their random direction" in first and "Figure 1." not in first
    assert page.stat().st_size < 200_000


def test_exported_svgs_and_figure_pages_keep_every_text_inside_and_clear(sweep_folder):
    exported = sorted((sweep_folder / "figures").glob("*.svg"))
    assert len(exported) >= 5
    for path in exported + sorted((sweep_folder / "figures").glob("*.html")):
        seen = open_page(path, WIDTH)
        assert_reads_well(seen, 1 if path.suffix == ".html" else seen.figures)


@pytest.fixture(scope="module")
def paper_folder(tmp_path_factory):
    """A tiny experiment (one seed, no LoRA, ablations), its tables and figures written by `write_paper`."""
    from analysis.studies.experiment import ExperimentSettings, run_experiment

    out = tmp_path_factory.mktemp("paper")
    model = tiny_model("llama")
    settings = ExperimentSettings(
        layers=[0, 1],
        kinds=("o", "down"),
        rank=2,
        seeds=(0,),
        steps=2,
        coeffs=(-1, 0, 1),
        lora=False,
        ablations=True,
        depths=False,
        generation_tokens=4,
        min_pmass=0.0,
    )
    run_experiment(
        model, probes.honesty_pairs(n=8, tokenizer=model.tokenizer), analysis.moral_dilemmas()[:40], settings, out=out, progress=False
    )
    analysis.paper.write_paper(out, formats=("html",))
    return out


def test_the_paper_page_shows_its_answer_then_tables_1_2_and_transfer(paper_folder, tmp_path):
    page = paper_folder / "paper.html"
    shot = artifacts_dir(tmp_path) / "paper_page.png"
    seen = open_page(page, WIDTH, screenshot=shot)
    print(f"\nscreenshots: {shot} and {shot.with_name(shot.stem + '_first_screen.png')}")
    text = page.read_text()
    assert_reads_well(seen, text.count("<figure>"))
    assert seen.figures >= 4  # transfer, pareto, dose, training curves
    order = [text.index(marker) for marker in ("<h2>Answer</h2>", "Table 1.", "Table 2.", "Transfer:", "Figure 1. Dose-response")]
    assert order == sorted(order)
    assert "Answer" in seen.first_screen and "Table 1." in seen.first_screen and "InnerPiSSA" in seen.first_screen
    assert page.stat().st_size < 200_000 and re.findall(r"<script[^>]*src=\"([^\"]+)\"", text) == ["plotly.min.js"]
