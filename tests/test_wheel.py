"""The package as a user installs it: a wheel, in a fresh virtual environment, away from the source tree.

The wheel must hold every data file the packages read (checked against the files in the
repository), and from that install `steerscope demo` runs and every shipped set loads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("probes", "steering", "analysis", "steerscope")

LOAD_EVERY_SHIPPED_SET = """
import analysis, probes
assert analysis.__file__.startswith({site!r}), analysis.__file__  # the wheel's copy, not the checkout
sizes = {{
    "dilemmas": len(analysis.dilemmas()),
    "sentiment_readouts": len(analysis.sentiment_readouts()),
    "moral_dilemmas": len(analysis.moral_dilemmas()),
    "controls": len(analysis.controls()),
    "neutral_texts": len(analysis.neutral_texts()),
    "honesty_pairs": len(probes.honesty_pairs(n=8)),
    "sentiment_pairs": len(probes.sentiment_pairs(n=8)),
}}
assert all(sizes.values()), sizes
print(sizes)
"""


def shipped_data_files() -> set[str]:
    """Every non-Python file inside the packages in the repository, as wheel paths."""
    return {
        path.relative_to(REPO).as_posix()
        for package in PACKAGES
        for path in (REPO / package).rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the source: setuptools reuses a build/ folder, which can hold files deleted since.
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "runs", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)], check=True)
    (built,) = out.glob("steerscope-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_every_data_file_the_packages_read(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert shipped_data_files(), "no data files found in the repository"
    assert shipped_data_files() <= names, sorted(shipped_data_files() - names)


@pytest.mark.slow
def test_the_installed_wheel_loads_every_shipped_set_and_runs_the_demo(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", "--disable-pip-version-check", str(wheel)], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True)
    site_packages = site.stdout.strip()
    # The dependencies (torch, nnsight, ...) come from this environment's site-packages as a plain path:
    # its .pth files (the checkout's editable install among them) are not processed from there.
    (Path(site_packages) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    loaded = subprocess.run(
        [str(python), "-c", LOAD_EVERY_SHIPPED_SET.format(site=site_packages)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    demo = subprocess.run(
        [str(venv / "bin" / "steerscope"), "demo", "--pairs", "8", "--layers", "10,20"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "Most separable: layer" in demo.stdout
