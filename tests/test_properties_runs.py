"""Properties of run folders: job keys never collide, and a resume never accepts items whose content changed."""

from __future__ import annotations

import dataclasses
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.readouts.items import ReadoutItem
from analysis.studies.layout import job_key
from analysis.studies.run_folder import RunFolder

names = st.text(min_size=0, max_size=12)  # any Unicode: case, symbols (×, ÷), spaces, hyphens
seeds = st.none() | st.integers(-3, 10**6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(names, names, seeds), unique=True, max_size=40))
def test_job_keys_are_injective_and_file_names(jobs):
    keys = [job_key(study, method, seed) for study, method, seed in jobs]
    assert len(set(keys)) == len(keys)
    assert len({k.lower() for k in keys}) == len(keys)  # also on a case-insensitive disk
    assert all(k and all(c.isascii() and (c.isalnum() or c in "-_") for c in k) for k in keys)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["InnerPiSSA", "prompting", "coherence ×100", "coherence ÷100", "PCA (L3)", "a-1234abcd", "LoRA", "lora"]), seeds)
def test_a_key_names_one_job(method, seed):
    """Different spellings of one method (case, symbols) are different jobs with different keys."""
    others = {"InnerPiSSA", "prompting", "coherence ×100", "coherence ÷100", "PCA (L3)", "a-1234abcd", "LoRA", "lora"} - {method}
    assert job_key("main", method, seed) not in {job_key("main", other, seed) for other in others}


words = st.lists(st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=5), min_size=1, max_size=3).map(tuple)
labels = st.dictionaries(st.sampled_from(["honesty", "care", "loyalty", "fairness"]), st.sampled_from([-1, 1]), max_size=3)


@st.composite
def item_lists(draw):
    count = draw(st.integers(1, 6))
    return [
        ReadoutItem(
            f"item-{index}",
            draw(st.text(max_size=20)),
            draw(st.text(max_size=8)),
            draw(words),
            draw(words),
            draw(st.sampled_from([-1.0, 0.0, 1.0])),
            tuple(draw(labels).items()),
            draw(st.sampled_from(["item", "dilemma", "daily_dilemma"])),
            draw(st.none() | st.sampled_from(["g1", "g2"])),
        )
        for index in range(count)
    ]


def changed(item: ReadoutItem, field: str, data) -> ReadoutItem:
    """``item`` with ``field`` set to a different value."""
    options = {
        "prompt": st.text(max_size=20),
        "prefill": st.text(max_size=8),
        "positive": words,
        "negative": words,
        "sign": st.sampled_from([-1.0, 0.0, 1.0]),
        "labels": labels.map(lambda d: tuple(d.items())),
        "kind": st.sampled_from(["item", "dilemma", "daily_dilemma", "other"]),
        "group": st.none() | st.sampled_from(["g1", "g2", "g3"]),
    }
    value = data.draw(options[field].filter(lambda v: v != getattr(item, field) and (field != "labels" or dict(v) != item.value_labels)))
    return dataclasses.replace(item, **{field: value})


@settings(max_examples=150, deadline=None)
@given(item_lists(), st.data())
def test_a_resume_refuses_any_change_of_an_items_content(items, data):
    index = data.draw(st.integers(0, len(items) - 1))
    field = data.draw(st.sampled_from(["prompt", "prefill", "positive", "negative", "sign", "labels", "kind", "group"]))
    edited = list(items)
    edited[index] = changed(items[index], field, data)
    with tempfile.TemporaryDirectory() as path:
        folder = RunFolder(path)
        folder.record_items(items, resume=False)
        folder.record_items(items, resume=True)  # the same items resume
        with pytest.raises(ValueError, match=rf"1 of {len(items)} items changed \({items[index].id}: {field} "):
            folder.record_items(edited, resume=True)
        folder.record_items(items, resume=True)  # and the refusal left the record as it was
