"""The shipped readout sets (``analysis/readouts/data/``), on top of the item schemas and DailyDilemmas.

- ``dilemmas``: 64 Yes/No honesty dilemmas; ``sentiment_readouts``: 48 evaluative next words;
  ``moral_dilemmas``: 103 value-labelled everyday dilemmas in the DailyDilemmas schema;
- ``controls``: arithmetic, facts and preferences (capability checks); ``neutral_texts``: the
  paragraphs on which steering's NLL cost is measured;
- ``eval_items`` (the sweep's items of a concept) and ``concept_items`` (the experiment's).

Example:
    items = eval_items("sentiment")                  # or "honesty"
    moral_dilemmas("fairness")                       # sign = each item's label for fairness
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .daily_dilemmas import load_daily_dilemmas
from .items import ReadoutItem, dilemma, labelled_for, load_items, read_jsonl

CONCEPTS = ("honesty", "sentiment")


def shipped(name: str) -> Path:
    return Path(str(resources.files("analysis.readouts.data").joinpath(name)))


def dilemmas() -> list[ReadoutItem]:
    """The 64 shipped Yes/No honesty dilemmas written for steerscope (honest answer "Yes" in exactly half)."""
    return load_items(shipped("dilemmas.jsonl"))


def sentiment_readouts() -> list[ReadoutItem]:
    """48 prompts written for steerscope whose next word is an evaluative adjective (good … vs bad …)."""
    return load_items(shipped("sentiment_readouts.jsonl"))


def moral_dilemmas(value: str = "honesty") -> list[ReadoutItem]:
    """103 everyday dilemmas written for steerscope, both actions of each as a Yes/No item (206 rows),
    every action labelled with the values it serves (honesty on about a third of them), in the
    Hugging Face DailyDilemmas schema. ``sign`` is the label for ``value``."""
    return load_daily_dilemmas(shipped("moral_dilemmas.jsonl"), value=value)


def controls() -> list[ReadoutItem]:
    """Capability checks: arithmetic and facts (answer known) and preferences (none)."""
    return [
        dilemma(row["id"], row["situation"], row["question"], row["answer"], (), row["kind"])
        for row in read_jsonl(shipped("controls.jsonl"))
    ]


def neutral_texts() -> list[str]:
    """Fixed neutral paragraphs on which steering's NLL cost is measured."""
    return [t.strip() for t in shipped("neutral.txt").read_text(encoding="utf-8").split("\n\n") if t.strip()]


def eval_items(concept: str) -> list[ReadoutItem]:
    """The shipped evaluation items of a concept: ``honesty`` (dilemmas) or ``sentiment`` (readouts)."""
    loaders = {"honesty": dilemmas, "sentiment": sentiment_readouts}
    if concept not in loaders:
        raise ValueError(f"No shipped evaluation items for concept {concept!r}; shipped: {', '.join(loaders)}.")
    return loaders[concept]()


def concept_items(concept: str) -> list[ReadoutItem]:
    """The shipped items on which the experiment (``steerscope train --concept``) judges a concept, labelled
    with it as a value: ``honesty`` the value-labelled moral dilemmas, ``sentiment`` the sentiment readouts
    (the training positive control: a concept this small model demonstrably has)."""
    if concept == "honesty":
        return moral_dilemmas("honesty")
    if concept == "sentiment":
        return labelled_for(sentiment_readouts(), "sentiment")
    raise ValueError(f"No shipped experiment items for concept {concept!r}; shipped: honesty, sentiment (or pass --items PATH).")
