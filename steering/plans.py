"""Plans and prompting: what `steering.applied` applies, built on the `Steerable` contract.

A `Steering` plan applies several directions together at one coefficient c, each with
its own weight, mode (`steering.modes`), target, and optionally a condition and chosen
positions; `Prompting` steers by asking. `applied(model, intervention, c)` is the one
door every consumer uses: a Direction (or a list) becomes a plan, adapters and prompting
pass through, None is the base model. Both register their saved type here
(`steering.register_loader`), so `steering.load_steerable` reads them back.

Example:
    >>> import torch
    >>> from steering import Direction
    >>> d = Direction(vector=torch.ones(4) / 2, scale=1.0, layer=3, kind="resid", method="doc")
    >>> Steering([d, d], weights=[1, -0.5]).name
    'doc@L3.resid + -0.5·doc@L3.resid'
    >>> as_steerable(d).name, as_steerable(None)
    ('doc@L3.resid', None)
    >>> Prompting("You are honest.", "You are a liar.").prompt_prefix(-2.0)
    'You are a liar.'
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from probes import sublayers as sl
from probes.files import read_json, write_json

from .directions import Direction, load_directions, save_directions
from .intervene import steer
from .modes import APPLY_MODES, Condition, calibrate_condition, check_mode, check_target
from .positions import Positions, check_positions
from .recorded_model import check_plan, plan_record
from .steerable import STEERABLE_FILE, Coeff, Steerable, check_coefficients, register_loader


@dataclass
class Steering:
    """A steering plan: directions (at their own layers and kinds) applied together at one coefficient c.

    Direction ``i`` is applied at ``c · weights[i]`` in ``modes[i]`` (see `steering.modes`: ``add``
    ``h + c·s·v``, ``ablate``, ``clamp`` with ``targets[i]``), all gated by ``condition`` when given.
    So "+honesty −sycophancy at two layers" is
    ``Steering([honesty12, syco12, honesty20], weights=[1, -1, 0.5])``; it saves and loads whole.
    """

    directions: list[Direction]
    name: str = ""
    per_row: bool = True
    weights: list[float] | None = None
    modes: list[str] | None = None
    targets: list[float | None] | None = None
    condition: Condition | None = None
    positions: Positions = "all"

    def __post_init__(self) -> None:
        self.positions = check_positions(plain_positions(self.positions))
        self.directions = [self.directions] if isinstance(self.directions, Direction) else list(self.directions)
        if not self.directions or not all(isinstance(d, Direction) for d in self.directions):
            raise ValueError("Steering needs at least one steering.Direction.")
        n = len(self.directions)
        self.weights = [1.0] * n if self.weights is None else [plan_weight(w) for w in self.weights]
        self.modes = ["add"] * n if self.modes is None else [check_mode(m) for m in self.modes]
        self.targets = [None] * n if self.targets is None else list(self.targets)
        for field_name in ("weights", "modes", "targets"):
            if len(getattr(self, field_name)) != n:
                raise ValueError(f"Steering has {n} directions but {len(getattr(self, field_name))} {field_name}: give one per direction.")
        self.targets = [check_target(mode, target) for mode, target in zip(self.modes, self.targets)]
        if self.condition is not None and not isinstance(self.condition, Condition):
            raise TypeError(f"condition must be a steering.Condition (see calibrate_condition), not a {type(self.condition).__name__}.")
        if not self.name:
            parts = [
                f"{'' if w == 1 else f'{w:g}·'}{d.name}{'' if m == 'add' else f' [{m}]'}"
                for d, w, m in zip(self.directions, self.weights, self.modes)
            ]
            self.name = " + ".join(parts)

    @property
    def simple(self) -> bool:
        """Plain addition of every direction at c (one `steer` call; per-row c and remote runs as before)."""
        return self.condition is None and self.positions == "all" and set(self.modes or []) == {"add"} and set(self.weights or []) == {1.0}

    @contextmanager
    def applied(self, model: Any, coeff: Coeff, remote: Any = None) -> Iterator[None]:
        check_coefficients(coeff)
        if self.simple:
            with steer(model, self.directions, coeff, remote=remote):
                yield
            return
        c = torch.as_tensor(coeff, dtype=torch.float32)
        with ExitStack() as stack:
            for direction, weight, mode, target in zip(self.directions, self.weights or [], self.modes or [], self.targets or []):
                stack.enter_context(
                    steer(
                        model,
                        direction,
                        c * weight,
                        mode=mode,
                        target=target,
                        condition=self.condition,
                        positions=self.positions,
                        remote=remote,
                    )
                )
            yield

    def prompt_prefix(self, coeff: float) -> str | None:
        return None

    def num_parameters(self) -> int:
        return 0

    def detach(self) -> None:
        """Nothing stays attached between `applied` blocks."""

    def save(self, path: str | Path, model: Any = None) -> Path:
        """``directions.safetensors`` + ``steerable.json`` (weights, modes, targets, condition, and with ``model``
        each direction's module path, the model's id and a sample of its steered blocks' weights, which
        `load` checks: `steering.recorded_model`)."""
        path = Path(path)
        directions = self.directions + ([self.condition.direction] if self.condition else [])
        save_directions(directions, path / "directions.safetensors")
        record: dict[str, Any] = {
            "type": "steering",
            "name": self.name,
            "weights": self.weights,
            "modes": self.modes,
            "targets": self.targets,
        }
        if self.condition is not None:
            record["condition_threshold"] = self.condition.threshold
        if self.positions != "all":
            if isinstance(self.positions, slice):
                record["positions"] = {"slice": [self.positions.start, self.positions.stop, self.positions.step]}
            else:
                record["positions"] = self.positions
        if model is not None:
            record |= plan_record(model, self.directions)
        write_json(path / STEERABLE_FILE, record)
        return path

    @classmethod
    def load(cls, path: str | Path, model: Any = None) -> Steering:
        """Read a plan `save` wrote; with ``model``, refuse it unless it was saved for this model's modules and
        weights (`steering.recorded_model`)."""
        path = Path(path)
        record = read_json(path / STEERABLE_FILE, "a saved steering plan")
        directions = load_directions(path / "directions.safetensors")
        condition = None
        if "condition_threshold" in record:
            condition = Condition(directions.pop(), float(record["condition_threshold"]))
        if model is not None:
            check_plan(record, model, directions, path)
        positions = record.get("positions", "all")
        if isinstance(positions, dict):
            positions = slice(*positions["slice"])
        return cls(
            directions,
            record.get("name", ""),
            weights=record.get("weights"),
            modes=record.get("modes"),
            targets=[saved_target(t) for t in record["targets"]] if record.get("targets") is not None else None,
            condition=condition,
            positions=positions,
        )


@dataclass
class Prompting:
    """Steering by asking: ``positive`` before every prompt at c > 0, ``negative`` at c < 0, nothing at 0.

    Only the sign of c matters (a prompt has no dose).
    """

    positive: str
    negative: str
    name: str = "prompting"
    per_row: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.positive, str) or not isinstance(self.negative, str):
            raise TypeError(
                f"Prompting takes two texts (positive, negative); got {type(self.positive).__name__}, {type(self.negative).__name__}."
            )
        if not self.positive and not self.negative:
            raise ValueError("Prompting with two empty prompts changes nothing at any c: give a positive and/or a negative persona text.")

    def applied(self, model: Any, coeff: Coeff) -> AbstractContextManager[Any]:
        check_coefficients(coeff)
        return nullcontext()

    def prompt_prefix(self, coeff: float) -> str | None:
        return self.positive if coeff > 0 else self.negative if coeff < 0 else None

    def num_parameters(self) -> int:
        return 0

    def detach(self) -> None:
        """Nothing is ever attached."""

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path / STEERABLE_FILE, {"type": "prompting"} | asdict(self))
        return path

    @classmethod
    def load(cls, path: str | Path, model: Any = None) -> Prompting:
        record = read_json(Path(path) / STEERABLE_FILE, "a saved prompting intervention")
        return cls(record["positive"], record["negative"], record.get("name", "prompting"))


def plan_weight(weight: Any) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"Steering weights={weight!r}: give one number per direction.") from None
    if not math.isfinite(value):
        raise ValueError(f"Steering weights: {weight!r} is not finite; each direction's weight multiplies c, so give a real number.")
    return value


def saved_target(value: Any) -> Any:
    """A target as read from ``steerable.json``; plans saved before targets were numbers hold a tensor's text."""
    if isinstance(value, str):
        match = re.fullmatch(r"tensor\(([^,()]+)\)", value.strip())
        if match:
            return float(match.group(1))
    return value


def plain_positions(positions: Any) -> Any:
    """``positions`` with numpy integers (an int, or a slice's bounds) as Python ints, so plans save them as numbers."""

    def plain(value: Any) -> Any:
        return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value

    if isinstance(positions, slice):
        return slice(plain(positions.start), plain(positions.stop), plain(positions.step))
    return plain(positions)


def as_steerable(intervention: Any) -> Steerable | None:
    """``intervention`` as a `Steerable` (Directions are wrapped in `Steering`; None stays None)."""
    if intervention is None or isinstance(intervention, Steerable):
        return intervention
    if isinstance(intervention, Direction) or (
        isinstance(intervention, (list, tuple)) and intervention and all(isinstance(d, Direction) for d in intervention)
    ):
        return Steering(list(intervention) if isinstance(intervention, (list, tuple)) else [intervention])
    raise TypeError(
        f"Cannot steer with a {type(intervention).__name__}: pass a steering.Direction (or a list of them), "
        "an adapter (InnerPiSSA, LoRA), a steering.Prompting, or None."
    )


@contextmanager
def applied(model: Any, intervention: Any, coeff: Coeff, remote: Any = None) -> Iterator[None]:
    """Apply ``intervention`` at ``coeff`` (per row allowed when it is ``per_row``) inside the block.

    ``remote`` (see `steer`) sends directions as nnsight edits; other interventions work through
    hooks or modules in this process and refuse a remote run.
    """
    steerable = as_steerable(intervention)
    if steerable is None:
        check_coefficients(coeff)
        yield
        return
    if torch.as_tensor(coeff).ndim == 1 and not steerable.per_row:
        raise ValueError(f"{steerable.name} takes one coefficient at a time, not one per row.")
    if isinstance(steerable, Steering):
        with steerable.applied(model, coeff, remote=remote):
            yield
        return
    if remote and not isinstance(steerable, Prompting):
        raise NotImplementedError(
            f"{steerable.name} works through forward hooks or modules in this process, which do not travel with a "
            "remote trace. Steer with Directions remotely, or load the model locally "
            "(probes.load_model(name, device_map='auto', dtype='bfloat16'))."
        )
    with steerable.applied(model, coeff):
        yield


def in_mode(direction: Direction, mode: str, acts=None):
    """``direction`` applied in ``mode`` as something `steering.applied` and `analysis.dose_response` take: the
    direction itself for ``add``, else a one-direction `steering.Steering` plan (``conditional``: add where the
    state passes the midpoint of the pairs in ``acts``, see `calibrate_condition`)."""
    if mode not in APPLY_MODES:
        raise ValueError(f"mode={mode!r}: choose one of {', '.join(APPLY_MODES)}.")
    if mode == "add":
        return direction
    if mode == "conditional":
        if acts is None:
            raise ValueError("mode='conditional' needs the pairs' activations (acts) to calibrate its threshold.")
        return Steering([direction], condition=calibrate_condition(acts, direction))
    return Steering([direction], modes=[mode])


def example_plan(model: Any) -> Steering:
    """Two random directions at two layers (the contract tests' instance)."""
    generator = torch.Generator().manual_seed(0)
    directions = []
    for layer in (0, sl.n_layers(model) - 1):
        width = sl.output_width(model, sl.resolve(model, layer, "resid")) or sl.config_of(model).hidden_size
        vector = torch.nn.functional.normalize(torch.randn(width, generator=generator), dim=0)
        directions.append(Direction(vector=vector, scale=2.0, layer=layer, kind="resid", method="example"))
    return Steering(directions)


register_loader("steering", example=example_plan)(Steering.load)
register_loader("prompting", example=lambda model: Prompting("You are honest.", "You are a liar."))(Prompting.load)
