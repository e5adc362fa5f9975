"""Held-out splits: choices are made on validation items, results reported on test items.

Example:
    split = split_items(analysis.eval_items("sentiment"), test_fraction=0.5, seed=0)
    split.validation, split.test                     # disjoint, balanced by sign, seeded
    split.record()                                   # what a run folder's split.json holds
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .items import ReadoutItem, check_items


@dataclass(frozen=True)
class Split:
    """Disjoint validation and test items (choices are made on validation, results reported on test)."""

    validation: list[ReadoutItem]
    test: list[ReadoutItem]
    seed: int
    test_fraction: float

    def record(self) -> dict[str, Any]:
        """What ``split.json`` holds."""
        return {
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "validation": [i.id for i in self.validation],
            "test": [i.id for i in self.test],
        }


def split_items(items: Sequence[ReadoutItem], test_fraction: float = 0.5, seed: int = 0) -> Split:
    """A seeded split into validation and test items.

    Items of one ``group`` go to the same side; groups are stratified by their signs, so each side
    keeps the set's balance of "Yes"-honest and "No"-honest items (a plain answer bias still cancels).

    Example:
        >>> import analysis
        >>> split = split_items(analysis.dilemmas(), test_fraction=0.5, seed=0)
        >>> len(split.validation), len(split.test)
        (32, 32)
        >>> {item.id for item in split.validation} & {item.id for item in split.test}
        set()
    """
    items = check_items(items)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction}: must be strictly between 0 and 1.")
    groups: dict[str, list[ReadoutItem]] = {}
    for item in items:
        groups.setdefault(item.group or item.id, []).append(item)
    strata: dict[tuple, list[str]] = {}
    for name, members in groups.items():
        strata.setdefault(tuple(sorted(m.sign for m in members)), []).append(name)
    rng = random.Random(seed)
    test_groups: set[str] = set()
    for names in strata.values():
        names = sorted(names)
        rng.shuffle(names)
        test_groups |= set(names[: round(len(names) * test_fraction)])
    test = [i for i in items if (i.group or i.id) in test_groups]
    validation = [i for i in items if (i.group or i.id) not in test_groups]
    if not test or not validation:
        raise ValueError(f"{len(items)} items are too few to split with test_fraction={test_fraction}: both sides need items.")
    return Split(validation, test, seed, test_fraction)
