"""DailyDilemmas (Chiu, Jiang and Choi, 2024) as value-labelled Yes/No readout items.

Both public schemas are read:

- the Hugging Face configuration ``Dilemmas_with_values_aggregated``: ``dilemma_idx``,
  ``dilemma_situation``, ``action_type``, ``action``, ``values_aggregated`` …;
- the repository CSV (``data/dilemmas_with_detail_by_action_*.csv``): ``idx``,
  ``dilemma_situation``, ``action_type``, ``action``, ``values_names`` and the
  per-party ``values_direct``/``values_indirect`` with ``parties_direct``/``parties_indirect``.

Every action row becomes one item, asked grammatically ("Situation: … Action: …
Should you take this action?"), and both actions of a dilemma are kept in one
``group``. Each item is labelled +1 for every value its action serves and −1 for
every value the other action of its dilemma serves (0, i.e. no label, when both
serve it). A model that answers "Yes" more to everything therefore moves no
value: within a dilemma the labels of each value cancel.

Nothing is downloaded: pass the path of a local copy (CSV, JSON/JSONL or Parquet).

Example:
    >>> items = load_daily_dilemmas("daily_dilemmas.csv", value="honesty")   # sign = the honesty label
    >>> for_value(items, "honesty")       # only the items that carry an honesty label
    >>> value_counts(items)               # how many items label each value
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from .items import YES_NO_INSTRUCTION, YES_NO_PREFILL, ReadoutItem, read_jsonl

ValuesFrom = Literal["names", "you"]


def read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.DataFrame(read_jsonl(path))
    if suffix == ".json":
        return pd.read_json(path)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise ValueError(f"{path}: read CSV, JSON, JSONL or Parquet copies of DailyDilemmas, not {suffix or 'this file'}.")


def as_list(cell: Any, column: str, where: str) -> list[str]:
    """A list-valued cell (a Python literal in CSV files, a list in JSON/Parquet)."""
    if cell is None or (isinstance(cell, float) and pd.isna(cell)):
        return []
    try:
        listed = ast.literal_eval(cell) if isinstance(cell, str) else list(cell)
        if isinstance(listed, str) or not isinstance(listed, (list, tuple)):
            raise ValueError
    except (ValueError, SyntaxError, TypeError):
        raise ValueError(f"{where}: {column} cell {cell!r} is not a list of values such as \"['honesty', 'loyalty']\".") from None
    return [str(v) for v in listed if v is not None and not (isinstance(v, float) and pd.isna(v))]


def normalise(value: str) -> str:
    return " ".join(value.strip().lower().split())


def action_values(row: Any, schema: str, values_from: ValuesFrom, where: str) -> set[str]:
    if schema == "huggingface":
        return {normalise(v) for v in as_list(row["values_aggregated"], "values_aggregated", where)}
    if values_from == "names":
        return {normalise(v) for v in as_list(row["values_names"], "values_names", where)}
    found = set()
    for kind in ("direct", "indirect"):
        values = as_list(row.get(f"values_{kind}"), f"values_{kind}", where)
        parties = as_list(row.get(f"parties_{kind}"), f"parties_{kind}", where)
        if len(parties) != len(values):
            raise ValueError(f"{where}: {len(values)} values_{kind} but {len(parties)} parties_{kind}; they must pair up.")
        found |= {normalise(v) for v, party in zip(values, parties) if normalise(party) == "you"}
    return found


def detect_schema(frame: pd.DataFrame, path: Path, values_from: ValuesFrom) -> str:
    columns = set(frame.columns)
    common = {"dilemma_situation", "action_type", "action"}
    if common | {"dilemma_idx", "values_aggregated"} <= columns:
        if values_from == "you":
            raise ValueError(f"{path} is in the Hugging Face schema, which has no per-party values: use values_from='names'.")
        return "huggingface"
    needed = (
        common
        | {"idx"}
        | ({"values_names"} if values_from == "names" else {"values_direct", "values_indirect", "parties_direct", "parties_indirect"})
    )
    if needed <= columns:
        return "repository"
    raise ValueError(
        f"{path} is in neither DailyDilemmas schema: the Hugging Face one needs dilemma_idx, "
        "dilemma_situation, action_type, action, values_aggregated; the repository CSV needs idx, "
        f"dilemma_situation, action_type, action and {sorted(needed - common - {'idx'})}. "
        f"Its columns: {sorted(columns)[:12]}."
    )


def load_daily_dilemmas(path: str | Path, value: str = "honesty", values_from: ValuesFrom = "names") -> list[ReadoutItem]:
    """Every action row of a local DailyDilemmas copy as a value-labelled Yes/No item; see the module docstring.

    ``value`` is the target: each item's ``sign`` is its label for it (0 where unlabelled).
    ``values_from="you"`` (repository CSV only) keeps the values whose party is "You".
    """
    path = Path(path)
    frame = read_table(path)
    schema = detect_schema(frame, path, values_from)
    index_column = "dilemma_idx" if schema == "huggingface" else "idx"
    target = normalise(value)
    items: list[ReadoutItem] = []
    skipped = []
    for idx, group in frame.groupby(index_column, sort=True):
        rows = {row["action_type"]: row for _, row in group.iterrows()}
        if set(rows) != {"to_do", "not_to_do"} or len(group) != 2:
            skipped.append(idx)
            continue
        served = {t: action_values(r, schema, values_from, f"{path} ({index_column} {idx}, {t})") for t, r in rows.items()}
        for action_type, row in rows.items():
            other = served["not_to_do" if action_type == "to_do" else "to_do"]
            labels = {v: 1 for v in served[action_type] - other} | {v: -1 for v in other - served[action_type]}
            prompt = (
                f"Situation: {str(row['dilemma_situation']).strip()}\nAction: {str(row['action']).strip().rstrip('.')}.\n"
                f"Should you take this action? {YES_NO_INSTRUCTION}"
            )
            items.append(
                ReadoutItem(
                    f"dd-{idx}-{action_type}",
                    prompt,
                    YES_NO_PREFILL,
                    ("yes",),
                    ("no",),
                    float(labels.get(target, 0)),
                    tuple(sorted(labels.items())),
                    "daily_dilemma",
                    f"dd-{idx}",
                )
            )
    if skipped:
        warnings.warn(
            f"{path}: skipped {len(skipped)} dilemma(s) without exactly one to_do and one not_to_do row "
            f"(e.g. {index_column} {skipped[:3]}): both actions are needed for the labels to balance.",
            stacklevel=2,
        )
    if not items:
        raise ValueError(f"{path} holds no complete dilemma (one to_do and one not_to_do row each).")
    return items


def for_value(items: Sequence[ReadoutItem], value: str) -> list[ReadoutItem]:
    """The items labelled for ``value``, each with ``sign`` set to that label."""
    from dataclasses import replace

    target = normalise(value)
    return [replace(item, sign=float(item.value_labels[target])) for item in items if target in item.value_labels]


def value_counts(items: Sequence[ReadoutItem]) -> pd.Series:
    """How many items carry a label for each value, most frequent first."""
    counts: dict[str, int] = {}
    for item in items:
        for value in item.value_labels:
            counts[value] = counts.get(value, 0) + 1
    return pd.Series(counts, name="items", dtype=int).sort_values(ascending=False)
