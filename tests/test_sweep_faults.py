"""Sweeps never mix, duplicate or lose rows: option checks on resume, one writer per folder,
error rows replaced by later successes, half-written rows dropped, every kind of kill resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import analysis
import analysis.studies.sweep as sweep_module
import probes
from analysis import sweep_steerability
from analysis.reports.sweep_report import write_report
from steerscope.cli import main
from tests.tiny import saved_folder, tiny_model, tiny_sweep_args

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = dict(
    layers="all",
    kinds=("resid", "down"),
    methods=("mean_diff", "pca_diff"),
    coeffs=(-1, 0, 1),
    top_k=2,
    stride=2,
    progress=False,
    min_pmass=0.0,
)


def small_sweep(out, **overrides):
    model = tiny_model("llama")
    pairs = probes.honesty_pairs(n=10, tokenizer=model.tokenizer, chat=True)
    return sweep_steerability(model, pairs, analysis.dilemmas()[:4], out=out, **(OPTIONS | overrides))


def metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows' numbers without their timings, in a fixed order."""
    return frame.drop(columns=["seconds"]).sort_values(["layer", "kind", "method"]).reset_index(drop=True)


def test_resume_with_other_options_is_refused_and_keeps_the_recorded_ones(tmp_path):
    small_sweep(tmp_path)
    recorded = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="Cannot resume .*coeffs"):
        small_sweep(tmp_path, resume=True, coeffs=(-2, 0, 2))
    assert (tmp_path / "config.json").read_text() == recorded


def test_a_second_sweep_into_a_folder_in_use_is_refused(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from analysis.studies.run_folder import RunFolder\n"
                f"with RunFolder({str(tmp_path)!r}).locked():\n    print('locked', flush=True); time.sleep(60)"
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match="in use by another steerscope run \\(pid"):
            small_sweep(tmp_path)
        assert not (tmp_path / "results.csv").exists()
    finally:
        holder.kill()  # a killed holder releases the lock
        holder.wait()
    assert len(small_sweep(tmp_path).results) > 0


def test_a_configuration_that_failed_then_succeeds_keeps_only_its_success(tmp_path, monkeypatch):
    original = sweep_module.dose_response
    calls = []

    def flaky(*args, **kwargs):  # the second dose of the run (the first method row) fails once
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("transient failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "dose_response", flaky)
    first = small_sweep(tmp_path)
    assert first.results["error"].notna().sum() == 1 and "transient failure" in first.results["error"].dropna().iloc[0]
    resumed = small_sweep(tmp_path, resume=True)
    assert resumed.results["error"].isna().all() and len(resumed.results) == len(first.results)
    write_report(resumed, ("html",))
    assert "(0 failed)" in (tmp_path / "summary.md").read_text()


def test_a_half_written_last_row_is_dropped_and_every_later_resume_works(tmp_path):
    complete = small_sweep(tmp_path / "complete").results
    small_sweep(tmp_path / "cut")
    results = tmp_path / "cut" / "results.csv"
    text = results.read_text()
    results.write_text(text[: len(text) - 25])  # killed in the middle of writing the last row
    with pytest.warns(UserWarning, match="cut off mid-write"):
        resumed = small_sweep(tmp_path / "cut", resume=True).results
    pd.testing.assert_frame_equal(metrics(resumed), metrics(complete))
    again = small_sweep(tmp_path / "cut", resume=True).results  # and the file is whole again
    pd.testing.assert_frame_equal(metrics(again), metrics(complete))


def test_a_sweep_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    complete = small_sweep(tmp_path / "complete").results
    script = f"from tests.test_sweep_faults import small_sweep\nsmall_sweep({str(tmp_path / 'killed')!r})"
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    results = tmp_path / "killed" / "results.csv"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 3:  # header and two rows
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert results.exists()
    resumed = small_sweep(tmp_path / "killed", resume=True).results
    pd.testing.assert_frame_equal(metrics(resumed), metrics(complete))


def test_invalid_coefficients_are_refused_before_any_work(tmp_path, capsys):
    for coeffs in ("--coeffs=nan,0", "--coeffs=1,1", "--coeffs=1,x"):
        with pytest.raises(SystemExit) as exited:
            main(["sweep", "--model", str(tmp_path / "nowhere"), coeffs])
        assert exited.value.code == 2
        assert "error: " in capsys.readouterr().err
    with pytest.raises(ValueError, match="repeats"):
        small_sweep(tmp_path, coeffs=(1, 1))
    assert not (tmp_path / "results.csv").exists()


def test_the_cli_exits_non_zero_when_every_configuration_failed(tmp_path, monkeypatch, capsys):
    from steering import directions

    folder = saved_folder(tiny_model("llama"), tmp_path / "tiny-llama")

    def broken(states, **options):
        raise RuntimeError("this method is broken")

    monkeypatch.setitem(directions.METHODS, "broken", directions.Method("broken", broken))
    code = main(tiny_sweep_args(folder, tmp_path / "run", "broken", "--stride", "2"))
    assert code == 1 and "Every configuration failed" in capsys.readouterr().err


def test_fault_injection_kill_at_any_row_then_corrupt_the_last_file_then_resume(tmp_path, monkeypatch):
    complete = small_sweep(tmp_path / "complete").results
    original = sweep_module.dose_response
    for stop_at in range(1, len(complete) + 1):
        out = tmp_path / f"stop{stop_at}"
        calls = []

        def dying(*args, calls=calls, stop_at=stop_at, **kwargs):
            calls.append(1)
            if len(calls) == stop_at:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        monkeypatch.setattr(sweep_module, "dose_response", dying)
        with pytest.raises(KeyboardInterrupt):
            small_sweep(out)
        monkeypatch.setattr(sweep_module, "dose_response", original)
        newest = max((p for p in out.rglob("*") if p.is_file() and p.name != ".lock"), key=lambda p: p.stat().st_mtime_ns)
        newest.write_bytes(newest.read_bytes()[: len(newest.read_bytes()) // 2])  # and the last file written is cut
        with pytest.warns(UserWarning) if newest.name == "results.csv" else nullcontext():
            resumed = small_sweep(out, resume=True).results
        pd.testing.assert_frame_equal(metrics(resumed), metrics(complete))


def nullcontext():
    from contextlib import nullcontext as null

    return null()


def test_a_run_recorded_before_an_option_existed_resumes_while_that_option_keeps_its_default(tmp_path):
    from analysis.studies.run_folder import RunFolder

    folder = RunFolder(tmp_path)
    folder.record_options({"coeffs": [-1, 0, 1]}, resume=False)  # written by a version without "modes"
    folder.record_options({"coeffs": [-1, 0, 1], "modes": ["add"]}, resume=True, defaults={"modes": ("add",)})
    (tmp_path / "config.json").write_text('{"coeffs": [-1, 0, 1]}')  # back to the old record
    with pytest.raises(ValueError, match="modes: None then, \\['ablate'\\] now"):
        folder.record_options({"coeffs": [-1, 0, 1], "modes": ["ablate"]}, resume=True, defaults={"modes": ("add",)})
