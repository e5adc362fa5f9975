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
    items = load_daily_dilemmas("daily_dilemmas.csv", value="honesty")   # sign = the honesty label
    for_value(items, "honesty")       # only the items that carry an honesty label
    value_counts(items)               # how many items label each value
"""

from __future__ import annotations

import ast
import difflib
import io
import json
import tokenize
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from .items import YES_NO_INSTRUCTION, YES_NO_PREFILL, ReadoutItem, read_jsonl, value_name

ValuesFrom = Literal["names", "you"]


def read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.DataFrame(read_jsonl(path))
    if suffix == ".json":
        return read_json_rows(path)
    if suffix == ".parquet":
        check_parquet_engine(path)
        return pd.read_parquet(path)
    raise ValueError(f"{path}: read CSV, JSON, JSONL or Parquet copies of DailyDilemmas, not {suffix or 'this file'}.")


def read_json_rows(path: Path) -> pd.DataFrame:
    """A ``.json`` file holding one JSON document (rows or columns) or JSON Lines (one row a line)."""
    text = path.read_text(encoding="utf-8")
    try:
        return pd.read_json(io.StringIO(text))
    except ValueError:
        pass
    try:
        return pd.DataFrame([json.loads(line) for line in text.splitlines() if line.strip()])
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is neither a JSON array of rows nor JSON Lines (one JSON object a line; line {error.lineno}: {error.msg}). "
            "Check the file is complete, or pass the CSV or Parquet copy."
        ) from None


def check_parquet_engine(path: Path) -> None:
    for engine in ("pyarrow", "fastparquet"):
        try:
            __import__(engine)
            return
        except ImportError:
            continue
    raise ImportError(
        f"Reading {path} needs a Parquet engine, and neither pyarrow nor fastparquet is installed: "
        "pip install pyarrow (or pip install -e '.[parquet]' in a checkout; or pass a CSV or JSONL copy of the file)."
    )


def as_list(cell: Any, column: str, where: str) -> list[str]:
    """A list-valued cell: a list in JSON/Parquet; in CSV files a Python literal (``['honesty', 'loyalty']``)
    or a numpy array as ``to_csv`` prints it (``['honesty' 'loyalty']``, maybe over several lines)."""
    if cell is None or (isinstance(cell, float) and pd.isna(cell)):
        return []
    listed = list_text(cell) if isinstance(cell, str) else (list(cell) if not isinstance(cell, (bytes, dict)) else None)
    if listed is None:
        raise ValueError(f"{where}: {column} cell {cell!r} is not a list of values such as \"['honesty', 'loyalty']\".")
    return [str(v) for v in listed if v is not None and not (isinstance(v, float) and pd.isna(v))]


def list_text(text: str) -> list[Any] | None:
    """The strings of a bracketed list written by Python (comma-separated) or numpy (space-separated);
    None for anything else, including the two mixed (where Python would silently join adjacent strings)."""
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text.strip()).readline) if t.type not in skip]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    if len(tokens) < 2 or tokens[0].string != "[" or tokens[-1].string != "]":
        return None
    values: list[Any] = []
    commas = adjacent = False
    previous = "["
    for token in tokens[1:-1]:
        if token.type == tokenize.STRING or (token.type == tokenize.NAME and token.string in ("None", "nan")):
            if previous == "value":
                adjacent = True
            value = ast.literal_eval(token.string) if token.type == tokenize.STRING else None
            if value is not None and not isinstance(value, str):
                return None
            values.append(value)
            previous = "value"
        elif token.string == "," and previous == "value":
            commas, previous = True, ","
        else:
            return None
    if commas and adjacent:
        return None
    return values


def normalise(value: str) -> str:
    return value_name(value)


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
    if values_from not in ("names", "you"):
        raise ValueError(f"values_from={values_from!r}: 'names' (every value of the action) or 'you' (the acting party's only).")
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
    check_value(items, target, str(path))
    return items


def check_value(items: Sequence[ReadoutItem], value: str, where: str) -> None:
    """Refuse a value no item is labelled with (every sign would be 0), naming the values that exist."""
    counts = value_counts(items)
    if value_name(value) in counts.index:
        return
    close = difflib.get_close_matches(value_name(value), list(counts.index), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(f"{v} ({n})" for v, n in counts.head(15).items()) or "none"
    raise ValueError(
        f"No item of {where} is labelled with the value {value!r}{hint}, so every sign would be 0. "
        f"Choose one of its values (items): {listed}{' ...' if len(counts) > 15 else ''}."
    )


def for_value(items: Sequence[ReadoutItem], value: str) -> list[ReadoutItem]:
    """The items labelled for ``value``, each with ``sign`` set to that label (refuses a value no item carries)."""
    from dataclasses import replace

    check_value(items, value, "these items")
    target = normalise(value)
    return [replace(item, sign=float(item.value_labels[target])) for item in items if target in item.value_labels]


def value_counts(items: Sequence[ReadoutItem]) -> pd.Series:
    """How many items carry a label for each value, most frequent first."""
    counts: dict[str, int] = {}
    for item in items:
        for value in item.value_labels:
            counts[value] = counts.get(value, 0) + 1
    return pd.Series(counts, name="items", dtype=int).sort_values(ascending=False)
