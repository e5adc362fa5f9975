"""Bad input gets an error that names the problem and the fix, before any work is done."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

import analysis
import probes
import steering
from probes import sublayers as sl
from steering import Direction
from tests.tiny import tiny_model

PAIRS = [("I love it", "I hate it"), ("Honest: yes", "Liar: yes")]


def direction(width=32, layer=1, kind="resid"):
    return Direction(vector=torch.nn.functional.normalize(torch.ones(width), dim=0), scale=1.0, layer=layer, kind=kind, method="test")


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.mark.parametrize("coeff", [float("nan"), float("inf"), [0.0, float("nan")]])
def test_steering_with_a_non_finite_coefficient_is_refused(model, coeff):
    with pytest.raises(ValueError, match="not finite"), steering.steer(model, direction(), coeff):
        pass


@pytest.mark.parametrize(
    "coeffs, message", [((float("nan"), 0.0), "finite"), ((1.0, 1.0), "repeats"), ((), "empty"), ("-1,0,1", "list of numbers")]
)
def test_dose_response_refuses_bad_coefficient_lists(model, coeffs, message):
    with pytest.raises(ValueError, match=message):
        analysis.dose_response(model, direction(), analysis.dilemmas()[:2], coeffs)


def test_a_model_that_outputs_nan_is_an_error_not_invalid_rows():
    model = tiny_model("llama")
    with torch.no_grad():
        sl.unwrap(model).model.norm.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN log-probabilities"):
        analysis.score_items(model, analysis.dilemmas()[:2])


def test_text_longer_than_learned_positions_is_refused_and_past_rope_range_warned():
    gpt2 = tiny_model("gpt2")  # 256 learned positions
    long_pair = [("x" * 300, "y" * 300)]
    with pytest.raises(ValueError, match="longer than this model's 256 positions"):
        probes.collect(gpt2, long_pair, layers=[0], progress=False)
    llama = tiny_model("llama")
    sl.config_of(llama).max_position_embeddings = 64
    with pytest.warns(UserWarning, match="longer than the 64 positions this model was trained on"):
        probes.collect(llama, [("a" * 80, "b" * 80)], layers=[0], progress=False)


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([None], "pair 0 is None"),
        ([3], "pair 0 is 3"),
        (None, "pass a list"),
        ([("a", "a")], "identical"),
        ([("a", 5)], "must be strings"),
        ([], "No pairs"),
    ],
)
def test_malformed_pairs_are_named(model, pairs, message):
    with pytest.raises(ValueError, match=message):
        probes.collect(model, pairs, layers=[0], progress=False)


def test_numpy_layer_indices_are_accepted_and_bad_ones_named(model):
    acts = probes.collect(model, PAIRS, layers=np.arange(2), progress=False)
    assert acts.layers == [0, 1]
    probes.collect(model, PAIRS, layers=np.int64(2), progress=False)
    with pytest.raises(ValueError, match="out of range"):
        sl.resolve(model, 7, "o")
    with pytest.raises(ValueError, match="not a whole number"):
        probes.collect(model, PAIRS, layers=[1.5], progress=False)


@pytest.mark.parametrize(
    "bad, message",
    [
        (direction(width=20), "has 20 features but 'resid' at layer 1 of this model has 32"),
        (direction(layer=9), "cannot steer this model.*out of range"),
        (direction(kind="gate", width=48), None),  # a correct gate direction works
    ],
)
def test_directions_that_do_not_fit_the_model_are_named_before_the_forward(model, bad, message):
    if message is None:
        with steering.steer(model, bad, 1.0):
            sl.unwrap(model)(**model.tokenizer(["hi"], return_tensors="pt"))
        return
    with pytest.raises(ValueError, match=message), steering.steer(model, bad, 1.0):
        pass


def test_a_token_position_that_was_not_captured_is_named(model):
    acts = probes.collect(model, PAIRS, layers=[1], tokens=1, progress=False)
    with pytest.raises(ValueError, match="1 token position\\(s\\) were captured"):
        steering.compute("mean_diff", acts, 1, "resid", token=5)


@pytest.mark.parametrize("call", ["dose_response", "score_items", "collect", "train_reprpo"])
def test_batch_size_zero_is_refused_with_its_name(model, call):
    items = analysis.dilemmas()[:2]
    with pytest.raises(ValueError, match="batch_size=0|batch_pairs=0"):
        if call == "dose_response":
            analysis.dose_response(model, direction(), items, (-1, 0, 1), batch_size=0)
        elif call == "score_items":
            analysis.score_items(model, items, batch_size=0)
        elif call == "collect":
            probes.collect(model, PAIRS, layers=[0], batch_size=0, progress=False)
        else:
            adapter = steering.attach_innerpissa(model, layers=[1], kinds=("o",), rank=2)
            try:
                steering.train_reprpo(model, adapter, PAIRS, batch_pairs=0, progress=False)
            finally:
                adapter.detach()


def test_an_unknown_training_option_lists_the_known_ones(model):
    adapter = steering.attach_innerpissa(model, layers=[1], kinds=("o",), rank=2)
    try:
        with pytest.raises(ValueError, match="Unknown training option.*batch_size.*batch_pairs"):
            steering.train_reprpo(model, adapter, PAIRS, batch_size=4)
    finally:
        adapter.detach()


def test_tokens_true_is_not_taken_for_one(model):
    with pytest.raises(ValueError, match="tokens=True"):
        probes.collect(model, PAIRS, layers=[0], tokens=True, progress=False)


def test_values_as_a_string_and_duplicate_item_ids_are_refused(tmp_path, model):
    with pytest.raises(ValueError, match="values must be a list"):
        analysis.dilemma("a", "s", "q?", "Yes", values="honesty")
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "situation": "s", "question": "q?", "honest_answer": "No", "values": "honesty"}\n')
    with pytest.raises(ValueError, match="row 1 has values=.honesty."):
        analysis.load_dilemmas(path)
    item = analysis.dilemmas()[0]
    with pytest.raises(ValueError, match="unique.*" + item.id):
        analysis.score_items(model, [item, item])


def test_a_malformed_daily_dilemmas_cell_is_named(tmp_path):
    import pandas as pd

    rows = [
        {"dilemma_idx": 1, "dilemma_situation": "s", "action_type": t, "action": "Act", "values_aggregated": cell}
        for t, cell in (("to_do", "['honesty'"), ("not_to_do", "['care']"))
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "dd.csv", index=False)
    with pytest.raises(ValueError, match="values_aggregated cell .*\\['honesty'"):
        analysis.load_daily_dilemmas(tmp_path / "dd.csv")


def test_importing_an_empty_or_foreign_gguf_file_is_named(tmp_path):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.gguf is empty"):
        steering.import_gguf(empty)
    foreign = tmp_path / "foreign.gguf"
    foreign.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        steering.import_gguf(foreign)


def test_a_local_folder_without_a_model_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("no model here")
    with pytest.raises(FileNotFoundError, match="holds no model.*notes.txt"):
        probes.load_model(str(tmp_path))


def test_loading_an_uncached_id_never_touches_the_network(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    contacted = []

    def no_network(host, *args, **kwargs):
        contacted.append(host)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    from huggingface_hub.utils import _detect_agent

    if hasattr(_detect_agent, "_registry"):
        monkeypatch.setattr(_detect_agent, "_registry", None)  # as in a fresh process, where it fetched on first use
    with pytest.raises(FileNotFoundError, match="neither a local folder nor in the Hugging Face cache"):
        probes.load_model("nobody-here/no-such-model-anywhere")
    assert contacted == []
