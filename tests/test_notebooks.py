"""The notebooks run top to bottom in fast mode, write the figures they promise, and show what matters.

Each notebook is executed once (a module-scoped fixture) and exported to HTML with nbconvert; the tests
then read that one result: every figure is an image in the exported HTML (and decodes in a browser),
the answer cell printed an answer with numbers, no output is oversized, and no warning, progress bar
or raw repr sits in the outputs. They are judged on what they produce, never on how fast: the only
per-cell limit is a hang guard far beyond any honest run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
HANG_GUARD_SECONDS = 3 * 3600
OUTPUT_LIMIT = 400_000  # bytes of one output: a figure's PNG and JSON together stay well under it
PROMISED = {
    "00_quickstart": [],
    "01_layer_steerability": [
        "01_separation_honesty.png",
        "01_separation_sentiment.png",
        "01_dose_response_honesty.png",
        "01_dose_response_sentiment.png",
        "01_sweep_honesty/summary.md",
        "01_sweep_sentiment/summary.md",
        "01_monitor.png",
    ],
    "02_directions": ["02_direction_cosines.png", "02_projection_histograms.png", "02_dose_by_method.png", "02_modes.png"],
    "03_innerpissa": [
        "03_training_curves.png",
        "03_adapter_changes.png",
        "03_pareto.png",
        "03_transfer.png",
        "03_adapter/adapter.safetensors",
    ],
    "04_paper_figures": [
        "paper/steerability_score.png",
        "paper/steerability_score.svg",
        "paper/dose_response_top.svg",
        "paper/sweep_summary.md",
        "paper/sweep_summary.tex",
        "paper/sweep_summary.csv",
        "train_paper/table1.tex",
        "train_paper/table1.csv",
        "train_paper/table2.md",
        "train_paper/figure1_dose.svg",
        "train_paper/paper.html",
    ],
}
WARNING_TEXT = re.compile(r"Warning|IProgress|Traceback|it/s\]|pair/s\]")
PLOTLY = "application/vnd.plotly.v1+json"


def tagged(notebook: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [c for c in notebook.cells if tag in c.metadata.get("tags", [])]


def test_every_notebook_asks_its_question_has_parameters_an_answer_and_no_stored_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(PROMISED)
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        parameters = tagged(notebook, "parameters")
        assert len(parameters) == 1 and "FAST = False" in parameters[0].source and 'OUT = "figures"' in parameters[0].source
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in notebook.cells if c.cell_type == "code"), path.name
        first = notebook.cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# ") and "?" in first.source.splitlines()[0], path.name
        answer = tagged(notebook, "answer")
        assert len(answer) == 1 and answer[0] is notebook.cells[-1] and "Markdown(" in answer[0].source, path.name
    assert len(nbformat.read(NOTEBOOKS / "00_quickstart.ipynb", as_version=4).cells) == 5


def run_fast(name: str, out: Path, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Execute a notebook with papermill-style injected parameters ``FAST = True, OUT = out``."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    index = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell(f"FAST = True\nOUT = {json.dumps(str(out))}")
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(index + 1, injected)
    client = NotebookClient(notebook, timeout=HANG_GUARD_SECONDS, kernel_name="python3", resources={"metadata": {"path": str(out)}})
    client.execute(**({"env": env} if env is not None else {}))
    return notebook


def export_html(notebook: nbformat.NotebookNode, path: Path) -> str:
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_notebook_node(notebook)
    path.write_text(html)
    return html


def outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


@pytest.fixture(scope="module", params=sorted(PROMISED))
def executed(request, tmp_path_factory):
    """(name, executed notebook, its OUT folder, the exported HTML's path and text), once per notebook."""
    name = request.param
    out = tmp_path_factory.mktemp(name)
    notebook = run_fast(name, out)
    html = export_html(notebook, out / f"{name}.html")
    return name, notebook, out, out / f"{name}.html", html


@pytest.mark.slow
def test_notebook_runs_in_fast_mode_and_writes_its_figures(executed):
    name, _, out, _, _ = executed
    for relative in PROMISED[name]:
        assert (out / relative).stat().st_size > 0, relative


def png_width(data: str) -> int:
    raw = base64.b64decode(data)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(raw[16:20], "big")


@pytest.mark.slow
def test_every_figure_is_an_image_in_the_exported_html(executed):
    name, notebook, _, _, html = executed
    figures = [o for o in outputs(notebook) if PLOTLY in o.get("data", {}) or "image/png" in o.get("data", {})]
    assert figures, f"{name} shows no figure"
    for output in figures:  # a plotly figure is interactive in a live kernel, and a PNG for everything else
        assert png_width(output["data"]["image/png"]) > 100
    images = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= len(figures)
    assert all(png_width(image) > 100 for image in images)


@pytest.mark.slow
def test_the_answer_cell_answers_with_the_runs_numbers(executed):
    name, notebook, _, _, _ = executed
    answer = tagged(notebook, "answer")[0]
    shown = [o["data"]["text/markdown"] for o in answer.get("outputs", []) if "text/markdown" in o.get("data", {})]
    assert len(shown) == 1 and "Answer" in shown[0], name
    assert len(re.findall(r"[-+]?\d+\.\d+", shown[0])) >= 3, shown[0]  # quotes the run's numbers
    assert "smoke test" in shown[0]  # fast mode says what it is
    assert any("smoke test" in o.get("data", {}).get("text/markdown", "") for o in outputs(notebook))


@pytest.mark.slow
def test_outputs_are_small_and_hold_no_warnings_progress_bars_or_reprs(executed):
    name, notebook, _, _, _ = executed
    for output in outputs(notebook):
        size = len(json.dumps(output))
        assert size < OUTPUT_LIMIT, f"{name}: an output of {size} bytes"
        assert "application/vnd.jupyter.widget-view+json" not in output.get("data", {}), f"{name}: a progress bar"
        text = output.get("text", "") + "".join(v for k, v in output.get("data", {}).items() if k == "text/plain")
        assert output.get("name") != "stderr", f"{name}: stderr {text[:300]}"
        assert not WARNING_TEXT.search(text), f"{name}: {text[:300]}"
        assert "SweepResult(" not in text and len(text.splitlines()) < 60, f"{name}: a repr dump {text[:300]}"


@pytest.mark.slow
def test_the_exported_html_draws_every_image_in_a_browser(executed):
    from tests.browser import chromium_path, evaluate, no_browser_reason

    if no_browser_reason():
        pytest.skip(no_browser_reason())
    name, _, _, path, html = executed

    async def natural_widths() -> list[int]:
        import choreographer

        async with choreographer.Browser(path=chromium_path(), headless=True) as browser:
            tab = await browser.create_tab("")
            await tab.send_command("Page.enable")
            loaded = tab.subscribe_once("Page.loadEventFired")
            await tab.send_command("Page.navigate", params={"url": path.resolve().as_uri()})
            await asyncio.wait_for(loaded, 60)
            return json.loads(await evaluate(tab, "JSON.stringify([...document.images].map(i => i.complete ? i.naturalWidth : 0))"))

    widths = asyncio.run(natural_widths())
    assert len(widths) == html.count("<img") and widths and all(w > 100 for w in widths), (name, widths)


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for output in outputs(notebook):
        parts.append(output.get("text", ""))
        parts.extend(str(v) for v in output.get("data", {}).values())
    return "\n".join(parts)


@pytest.mark.slow
def test_paper_figures_notebook_without_png_export_writes_and_shows_the_html(tmp_path):
    # The kernel's PATH holds only the interpreter's folder: no Chromium can be found, as on a
    # machine where setup could not install it.
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))
    env.pop("BROWSER_PATH", None)
    notebook = run_fast("04_paper_figures", tmp_path, env)
    paper = tmp_path / "paper"
    assert not list(paper.glob("*.png")) and not list(paper.glob("*.svg"))
    for stem in ("steerability_score", "dose_response_top", "separation_auroc"):
        assert (paper / f"{stem}.html").stat().st_size > 0, stem
    assert (paper / "plotly.min.js").stat().st_size > 1_000_000  # the HTML opens offline
    shown = outputs_text(notebook)
    assert PLOTLY in json.dumps(outputs(notebook))
    assert shown.count("export needs kaleido and a Chromium") == 1  # said once, not per figure
    assert (paper / "sweep_summary.md").read_text().startswith("| configuration |")  # the key columns; the CSV holds all
