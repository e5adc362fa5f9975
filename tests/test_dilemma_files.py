"""DailyDilemmas copies as users hold them: numpy-written list cells, JSON Lines named .json, Parquet
without an engine, value names in other Unicode forms, and a target value no item carries."""

from __future__ import annotations

import json
import sys
import unicodedata

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.measures.values import value_profile
from analysis.readouts.daily_dilemmas import for_value, load_daily_dilemmas, value_counts
from steerscope.cli import main


def hf_frame(values: list[list[str]]) -> pd.DataFrame:
    """Dilemmas in the Hugging Face schema: row 2k is dilemma k's to_do action, row 2k+1 its not_to_do."""
    return pd.DataFrame(
        {
            "dilemma_idx": [i // 2 for i in range(len(values))],
            "dilemma_situation": [f"Situation {i // 2}." for i in range(len(values))],
            "action_type": ["to_do" if i % 2 == 0 else "not_to_do" for i in range(len(values))],
            "action": [f"Action {i}" for i in range(len(values))],
            "values_aggregated": values,
        }
    )


VALUES = [["honesty", "loyalty"], ["friendship"], ["care"], ["honesty", "care"]]


def expected_labels() -> dict[str, dict[str, int]]:
    """Each action's labels written out by hand from VALUES (+1 what it serves that the other does not)."""
    return {
        "dd-0-to_do": {"honesty": 1, "loyalty": 1, "friendship": -1},
        "dd-0-not_to_do": {"honesty": -1, "loyalty": -1, "friendship": 1},
        "dd-1-to_do": {"honesty": -1},
        "dd-1-not_to_do": {"honesty": 1},
    }


def test_list_cells_written_from_numpy_arrays_are_read_as_lists(tmp_path):
    """``pd.read_parquet(...).to_csv()`` writes list cells as numpy prints arrays: ``['honesty' 'loyalty']``."""
    frame = hf_frame(VALUES)
    frame["values_aggregated"] = [np.array(v, dtype=object) for v in VALUES]
    frame.to_csv(tmp_path / "from_parquet.csv", index=False)
    assert "['honesty' 'loyalty']" in (tmp_path / "from_parquet.csv").read_text()
    items = load_daily_dilemmas(tmp_path / "from_parquet.csv")
    assert {i.id: i.value_labels for i in items} == expected_labels()
    assert {i.id: i.sign for i in items} == {k: float(v.get("honesty", 0)) for k, v in expected_labels().items()}


def test_a_long_numpy_list_cell_that_wraps_lines_is_read_whole(tmp_path):
    many = [f"value number {k}" for k in range(12)]
    frame = hf_frame([many, ["care"]])
    frame["values_aggregated"] = [np.array(v, dtype=object) for v in frame["values_aggregated"]]
    frame.to_csv(tmp_path / "wrapped.csv", index=False)
    assert "\n" in str(np.array(many, dtype=object))  # numpy wraps it over lines
    labels = {i.id: i.value_labels for i in load_daily_dilemmas(tmp_path / "wrapped.csv", value="care")}
    assert labels["dd-0-to_do"] == {v: 1 for v in many} | {"care": -1}


@pytest.mark.parametrize(
    "cell",
    ["honesty", "['honesty', 'loyalty' 'care']", "['honesty' 'loyalty',]", "[honesty, loyalty]", "['honesty'"],
)
def test_an_unparseable_list_cell_is_refused_by_name(tmp_path, cell):
    frame = hf_frame(VALUES)
    frame["values_aggregated"] = frame["values_aggregated"].astype(object)
    frame.at[0, "values_aggregated"] = cell
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"values_aggregated cell .* is not a list of values"):
        load_daily_dilemmas(tmp_path / "bad.csv")


def test_value_names_in_other_unicode_forms_are_one_value(tmp_path):
    nfc = unicodedata.normalize("NFC", "fidélité")
    nfd = unicodedata.normalize("NFD", "fidélité")
    assert nfc != nfd
    rows = [[nfc, "honesty"], [nfd], ["ﬁdelity"], ["Fidelity", "honesty"]]  # ﬁ: the NFKC ligature
    hf_frame(rows).to_json(tmp_path / "unicode.jsonl", orient="records", lines=True)
    items = load_daily_dilemmas(tmp_path / "unicode.jsonl")
    labels = {i.id: i.value_labels for i in items}
    # both actions of each dilemma serve the same (normalised) fidelity: no label for it
    assert labels == {
        "dd-0-to_do": {"honesty": 1},
        "dd-0-not_to_do": {"honesty": -1},
        "dd-1-to_do": {"honesty": -1},
        "dd-1-not_to_do": {"honesty": 1},
    }
    assert set(value_counts(items).index) == {"honesty"}
    # a target in another normal form still finds its items
    other = [
        analysis.ReadoutItem("a", "p", "", ("yes",), ("no",), 1.0, ((nfc, 1),)),
        analysis.ReadoutItem("b", "p", "", ("yes",), ("no",), -1.0, ((nfc, -1),)),
    ]
    assert [i.id for i in for_value(other, nfd.upper())] == ["a", "b"]
    dose = pd.DataFrame([{"item": i.id, "coeff": c, "logratio": c * i.sign, "valid": True} for i in other for c in (-1.0, 0.0, 1.0)])
    profile = value_profile(dose, other, target=nfd)
    assert profile["target"].tolist() == [True] and profile["effect"].iloc[0] == pytest.approx(1.0)


def test_items_from_jsonl_normalise_their_value_names(tmp_path):
    rows = [
        {"id": "a", "prompt": "p", "prefill": "", "positive": ["yes"], "negative": ["no"], "labels": {"Fide\u0301lite\u0301": 1}},
        {"id": "b", "situation": "s", "question": "q?", "honest_answer": "No", "values": ["FIDÉLITÉ"]},
    ]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    items = analysis.load_items(tmp_path / "items.jsonl")
    assert [i.value_labels for i in items] == [{"fidélité": 1}, {"fidélité": -1}]


def test_json_lines_in_a_json_file_are_read(tmp_path):
    frame = hf_frame(VALUES)
    frame.to_json(tmp_path / "rows.json", orient="records", lines=True)  # what datasets' to_json writes
    assert {i.id: i.value_labels for i in load_daily_dilemmas(tmp_path / "rows.json")} == expected_labels()
    frame.to_json(tmp_path / "array.json", orient="records")
    assert {i.id: i.value_labels for i in load_daily_dilemmas(tmp_path / "array.json")} == expected_labels()
    (tmp_path / "broken.json").write_text('{"dilemma_idx": 0,\n')
    with pytest.raises(ValueError, match=r"neither a JSON array .* nor JSON Lines"):
        load_daily_dilemmas(tmp_path / "broken.json")


def test_parquet_without_an_engine_says_how_to_install_one(tmp_path, monkeypatch, capsys):
    (tmp_path / "dd.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_daily_dilemmas(tmp_path / "dd.parquet")
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--items", str(tmp_path / "dd.parquet"), "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2 and "pip install pyarrow" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_target_value_no_item_carries_is_refused_with_the_values_that_exist(tmp_path):
    hf_frame(VALUES).to_csv(tmp_path / "dd.csv", index=False)
    with pytest.raises(ValueError, match=r"'honestly'.*honesty.*friendship") as error:
        load_daily_dilemmas(tmp_path / "dd.csv", value="honestly")
    assert "did you mean 'honesty'" in str(error.value)
    with pytest.raises(ValueError, match="honestly"):
        analysis.moral_dilemmas("honestly")
    with pytest.raises(ValueError, match="honestly"):
        for_value(load_daily_dilemmas(tmp_path / "dd.csv"), "honestly")


def test_an_unknown_values_from_is_refused(tmp_path):
    hf_frame(VALUES).to_csv(tmp_path / "dd.csv", index=False)
    with pytest.raises(ValueError, match=r"values_from='acting': 'names' .* or 'you'"):
        load_daily_dilemmas(tmp_path / "dd.csv", values_from="acting")  # type: ignore[arg-type]
