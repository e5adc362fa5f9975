"""What decides an experiment's numbers: `ExperimentSettings` (recorded in its run folder's ``config.json``).

Its own module, below both the checks (`experiment_checks`) and the experiment that uses them.

Example:
    >>> ExperimentSettings(steps=64, seeds=(0, 1, 2)).val_fraction
    0.25
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# What an option meant in a run folder recorded before the option existed (resuming such a run must not mix values).
UNRECORDED_MEANT: dict[str, Any] = {"objective": "gap"}


@dataclass
class ExperimentSettings:
    """Everything that decides the experiment's numbers (recorded in ``config.json``)."""

    target: str = "honesty"
    concept: str = "honesty"  # whose prompting personas the prompting baseline uses (the pairs are passed in)
    layers: Sequence[int] | None = None  # adapter layers; None: every other layer of the middle half
    kinds: Sequence[str] = ("o", "down")
    rank: int = 16
    seeds: Sequence[int] = (0, 1, 2)
    steps: int = 16
    lr: float = 3e-3
    objective: str = "shift"  # what ReprPO pushes along its frozen direction: the pair midpoint ("shift"), the pair "gap" or "both"
    batch_pairs: int = 4
    val_fraction: float = 0.25  # training pairs held out to choose the training budget (the best validation step is kept); 0: none
    patience: int | None = None  # stop after this many steps without a better validation loss (None: run every step)
    coeffs: Sequence[float] = (-1.0, 0.0, 1.0, 2.0, 5.0)  # the tables read −1, 0, +1; Figure 1 all of them
    cost_budget: float | None = 0.05  # Table 1 compares the main methods at this mean KL on neutral text (nats/token); None: off
    cost_max_coeff: float = 64.0  # the largest c tried to reach the budget (a method still under it is judged there)
    test_fraction: float = 0.5
    split_seed: int = 0
    lora: bool = True
    ablations: bool = False
    depths: bool = False
    capability: bool = True
    generation_tokens: int = 40
    batch_size: int = 16
    min_pmass: float = 0.1
