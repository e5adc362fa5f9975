"""A run's output folder: an exclusive lock, its recorded options and items, its manifest, its results table
(the file names are `analysis.studies.layout`'s).

Long runs (sweeps, training comparisons) write into one folder, row by row, so
that a run killed at any point keeps its finished work and ``resume`` continues
it. `RunFolder` makes that safe:

- one run at a time: a second run into the same folder is refused while the
  first holds the lock (an OS file lock, released even when the process is killed);
- no mixing: the options are recorded in ``config.json`` and the items' content in
  ``items.json``; resuming with other options, or with items whose labels, signs or
  prompts changed under the same ids, is refused with the list of what differs;
- nothing half-written: `ResultTable` rewrites ``results.csv`` atomically after
  every row, keeps one row per configuration (a configuration that failed and
  later succeeded keeps only its success) and, reading an older file, drops an
  incomplete last line.

Example:
    folder = RunFolder("runs/sweep")
    with folder.locked():
        folder.record_options({"coeffs": [-1, 0, 1]}, resume=True)
        table = ResultTable(folder.file(RESULTS), COLUMNS, key=("layer", "kind", "method"))
        table.record({"layer": 3, "kind": "resid", "method": "pca_diff", "score": 0.1})
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from probes.files import read_json, write_atomic, write_json
from probes.model_handle import model_handle

from .layout import CONFIG, ITEMS, LOCK, MANIFEST, RESULTS, is_missing


class RunFolder:
    """The folder of one run; see the module docstring."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @contextmanager
    def locked(self) -> Iterator[RunFolder]:
        """Hold the folder's exclusive lock inside the block; refuse if another run holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.file(LOCK), "a+") as handle:  # closing the file releases the lock
            if not try_lock(handle):
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RuntimeError(
                    f"{self.path} is in use by another steerscope run ({holder}). Wait for it to "
                    "finish, or write this run into another folder."
                )
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield self

    def record_options(self, options: dict[str, Any], resume: bool, results: str = RESULTS, defaults: dict[str, Any] | None = None) -> None:
        """Write ``config.json``; when resuming, first check the recorded options are these.

        An option the recorded run does not name (added in a later version) matches when it has its
        default in ``defaults``, so upgrading steerscope does not strand a half-finished run."""
        options = json.loads(json.dumps(options, default=str))  # as it reads back
        defaults = json.loads(json.dumps(defaults or {}, default=str))
        if self.file(results).exists() and not resume:
            raise FileExistsError(
                f"{self.file(results)} exists: pass resume=True (--resume) to continue that run, or choose another output folder."
            )
        if resume and self.file(CONFIG).exists():
            recorded = read_json(self.file(CONFIG), "the run's options")
            differs = {
                k: (recorded.get(k), v)
                for k, v in options.items()
                if recorded.get(k) != v and not (k not in recorded and k in defaults and defaults[k] == v)
            }
            if differs:
                detail = "; ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in list(differs.items())[:6])
                raise ValueError(
                    f"Cannot resume {self.path} with other options ({detail}): its finished rows would mix "
                    "with new ones. Rerun with the same options, or write into another folder."
                )
        write_json(self.file(CONFIG), options)

    def record_items(self, items: Sequence[Any], resume: bool) -> None:
        """Write ``items.json`` (every item's content by id); when resuming, first refuse items whose content
        changed under the same id (other labels, signs, prompts ...: the finished rows were computed on the
        recorded ones), listing which items changed and how. (Other ids are refused by `record_options`.)"""
        records = {item.id: item_record(item) for item in items}
        if resume:
            changed = self.changed_items(records, items)
            if changed:
                raise ValueError(
                    f"Cannot resume {self.path} with other items under the same ids: {changed} Its finished rows were "
                    "computed on the recorded items; load the items as that run did (same file, value and values_from), "
                    "or write into another folder."
                )
        write_json(self.file(ITEMS), records)

    def changed_items(self, records: dict[str, dict[str, Any]], items: Sequence[Any]) -> str:
        """What differs between the recorded items and ``records`` (empty when nothing does)."""
        if self.file(ITEMS).exists():
            recorded = read_json(self.file(ITEMS), "the run's items")
            diffs = [(key, item_diff(recorded[key], record)) for key, record in records.items() if key in recorded]
            diffs = [(key, diff) for key, diff in diffs if diff]
            if not diffs:
                return ""
            listed = "; ".join(f"{key}: {diff}" for key, diff in diffs[:5])
            return f"{len(diffs)} of {len(records)} items changed ({listed}{'; ...' if len(diffs) > 5 else ''})."
        if self.file(MANIFEST).exists():  # a folder from before items.json: its manifest's hash of the items
            recorded_hash = read_json(self.file(MANIFEST), "the run's manifest").get("items_hash")
            if recorded_hash is not None and recorded_hash != items_hash(items):
                return "the items' prompts, prefills, answer words or signs differ from the recorded run's (manifest.json items_hash)."
        return ""

    def write_manifest(
        self, model: Any, options: dict[str, Any], pairs: Sequence[Any], items: Sequence[Any], seeds: dict[str, Any]
    ) -> None:
        """``manifest.json``: environment, model and weights, a hash of the options, of the pairs and of the
        items, the seeds and every option; a resumed run adds the time it resumed."""
        import sys
        import time

        from probes.fingerprint import model_fingerprint

        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        path = self.file(MANIFEST)
        if path.exists():
            manifest = read_json(path, "the run's manifest")
            manifest.setdefault("resumed", []).append(now)
        else:
            manifest = {
                "created": now,
                "command": sys.argv,
                **environment(),
                "model": model_handle(model).model_id,
                "weights": model_fingerprint(model),
                "config_hash": digest(options),
                "pairs_hash": digest([[p.positive, p.negative] for p in pairs]),
                "items_hash": items_hash(items),
                "seeds": seeds,
                "options": options,
            }
        write_json(path, manifest)


def items_hash(items: Sequence[Any]) -> str:
    return digest([[i.id, i.prompt, i.prefill, i.positive, i.negative, i.sign] for i in items])


def item_record(item: Any) -> dict[str, Any]:
    """An item's content as ``items.json`` holds it (everything but its id)."""
    return json.loads(
        json.dumps(
            {
                "prompt": item.prompt,
                "prefill": item.prefill,
                "positive": list(item.positive),
                "negative": list(item.negative),
                "sign": float(item.sign),
                "labels": dict(item.labels),
                "kind": item.kind,
                "group": item.group,
            }
        )
    )


def item_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """How one item changed, field by field ("" when it did not)."""
    parts = []
    for name in dict.fromkeys([*old, *new]):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if name == "labels" and isinstance(before, dict) and isinstance(after, dict):
            moved = [
                f"{v} {before.get(v, 'none')} then, {after.get(v, 'none')} now"
                for v in sorted(set(before) | set(after))
                if before.get(v) != after.get(v)
            ]
            parts.append("labels " + ", ".join(moved))
        else:
            parts.append(f"{name} {shorten(before)} then, {shorten(after)} now")
    return "; ".join(parts)


def shorten(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def environment() -> dict[str, Any]:
    """Versions of Python and of every package that shapes a run's numbers."""
    import importlib.metadata
    import platform
    import sys

    packages: dict[str, str | None] = {}
    for name in (
        "steerscope",
        "torch",
        "transformers",
        "nnsight",
        "numpy",
        "scipy",
        "scikit-learn",
        "pandas",
        "peft",
        "safetensors",
        "plotly",
        "accelerate",
        "gguf",
    ):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": packages}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def try_lock(handle: Any) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


class ResultTable:
    """A CSV of one row per configuration (identified by ``key`` columns), rewritten atomically."""

    def __init__(self, path: str | Path, columns: Sequence[str], key: Sequence[str]):
        self.path = Path(path)
        self.columns = list(columns)
        self.key = tuple(key)
        self.rows: dict[tuple, dict[str, Any]] = {}
        if self.path.exists():
            for row in read_complete_rows(self.path):
                self.rows[self.key_of(row)] = row

    def key_of(self, row: dict[str, Any]) -> tuple:
        """The row's key as text; a missing value (None in memory, an empty cell on disk) is ``""``,
        so a row read back from the file has the key it was recorded with."""
        return tuple("" if is_missing(row.get(k)) else str(row.get(k)) for k in self.key)

    def record(self, row: dict[str, Any]) -> None:
        """Add or replace the row of this configuration, and rewrite the file."""
        self.rows[self.key_of(row)] = {c: row.get(c) for c in self.columns}
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows.values())
        write_atomic(self.path, buffer.getvalue())

    def finished(self) -> set[tuple]:
        """Keys of the configurations that finished without an error."""
        return {k for k, row in self.rows.items() if is_missing(row.get("error"))}

    def is_finished(self, **key: Any) -> bool:
        """Whether the configuration with these key values finished without an error.

        table.is_finished(study="main", method="prompting", seed=None)  # doctest: +SKIP
        """
        return self.key_of(key) in self.finished()

    def frame(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame(columns=self.columns)
        return pd.read_csv(self.path)


def read_complete_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV file that are complete: a last line cut off mid-write (no newline, or
    too few fields) is dropped, with a warning."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        warnings.warn(f"{path}: the last line was cut off mid-write; it is dropped and that configuration reruns.", stacklevel=3)
        text = "".join(lines[:-1])
    reader = csv.DictReader(io.StringIO(text))
    rows = []
    for row in reader:
        if None in row or any(v is None for v in row.values()):  # wrong number of fields
            warnings.warn(f"{path}: dropping a malformed row ({list(row.values())[:3]}...).", stacklevel=3)
            continue
        rows.append(row)
    return rows
