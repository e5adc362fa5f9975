"""One contract for everything that steers: directions, adapters and prompting.

A `Steerable` changes what the model does as a function of a coefficient c, and
c = 0 is the base model exactly. Every consumer (dose-response, the method
comparison, training, generation) goes through `applied`:

    with applied(model, intervention, c):
        ...                       # every forward inside is steered at c

where ``intervention`` is a `Steerable`, a `Direction` or a list of them (wrapped
in `Steering`), or None (the base model). ``c`` may be one value per batch row
when ``per_row`` is true. `Steerable.prompt_prefix(c)` is text placed before each
prompt at that coefficient (only prompting uses it), so "steering by asking" is
measured by the same machinery.

Example:
    >>> with applied(model, direction, 1.5): ...
    >>> with applied(model, adapter, torch.tensor([-1.0, 0.0, 1.0])): ...     # one c per row
    >>> persona = Prompting("You are honest.", "You are a liar.")
    >>> analysis.dose_response(model, persona, items)
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from probes.files import read_json, write_json

from .directions import Direction, load_directions, save_directions
from .frozen import release
from .intervene import Coeff, check_coefficients, steer
from .modes import Condition, check_mode, check_target
from .positions import Positions, check_positions
from .recorded_model import check_plan, plan_record


@runtime_checkable
class Steerable(Protocol):
    """What every intervention offers; see the module docstring."""

    name: str
    per_row: bool

    def applied(self, model: Any, coeff: Coeff) -> AbstractContextManager[Any]: ...

    def prompt_prefix(self, coeff: float) -> str | None: ...

    def num_parameters(self) -> int: ...

    def detach(self) -> None: ...

    def save(self, path: str | Path) -> Path: ...


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
        write_json(path / "steerable.json", record)
        return path

    @classmethod
    def load(cls, path: str | Path, model: Any = None) -> Steering:
        """Read a plan `save` wrote; with ``model``, refuse it unless it was saved for this model's modules and
        weights (`steering.recorded_model`)."""
        path = Path(path)
        record = read_json(path / "steerable.json", "a saved steering plan")
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
        write_json(path / "steerable.json", {"type": "prompting"} | asdict(self))
        return path


class AdapterHandle:
    """What InnerPiSSA and LoRA share: a coefficient (per row allowed), a sign, parameters and an exact detach.

    Subclasses provide ``trainable_parameters``, ``_apply_coeff`` (push ``self.c · self.sign``
    into their modules) and ``_remove`` (take their modules or hooks out of the model).
    """

    per_row = True

    def __init__(self, model: Any, name: str, sign: float = 1.0):
        self.model = model
        self.name = name
        self.c: Coeff = 0.0
        self.sign = sign
        self.detached = False

    def check_attached(self) -> None:
        if self.detached:
            raise ValueError(
                f"{self.name} was detached from its model, so it would steer nothing: attach it again "
                "(steering.load_steerable(path, model) after adapter.save(path)) before steering with it."
            )

    # -- coefficient ---------------------------------------------------------
    def set_coeff(self, c: Coeff) -> None:
        """Steer at ``c`` (a float, or one value per batch row) until changed; 0 is the base model."""
        check_coefficients(c)
        self.check_attached()
        self.c = c
        self._apply_coeff()

    @contextmanager
    def coeff(self, c: Coeff) -> Iterator[AdapterHandle]:
        previous = self.c
        self.set_coeff(c)
        try:
            yield self
        finally:
            if not self.detached:  # detached inside the block: nothing left to restore
                self.set_coeff(previous)

    def applied(self, model: Any, coeff: Coeff) -> AbstractContextManager[Any]:
        if model is not self.model:
            raise ValueError(f"{self.name} is attached to another model instance.")
        return self.coeff(coeff)

    def prompt_prefix(self, coeff: float) -> str | None:
        return None

    def flip_sign(self) -> None:
        """Swap the meaning of +c and −c (used after training when +1 separates the wrong way)."""
        self.check_attached()
        self.sign = -self.sign
        self._apply_coeff()

    # -- parameters ----------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    # -- lifecycle -----------------------------------------------------------
    def detach(self) -> None:
        """Remove the adapter; the base parameters' requires_grad flags come back once every adapter on
        this model is detached, in any order. A second detach does nothing."""
        if self.detached:
            return
        self._remove()
        release(self.model, self)
        self.detached = True

    def _apply_coeff(self) -> None:
        raise NotImplementedError

    def _remove(self) -> None:
        raise NotImplementedError


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


def load_steerable(path: str | Path, model: Any) -> Steerable:
    """Read back anything `Steerable.save` wrote (InnerPiSSA and LoRA attach themselves to ``model``)."""
    path = Path(path)
    if (path / "adapter.json").exists() and not (path / "steerable.json").exists():
        from .adapter_files import load_innerpissa

        return load_innerpissa(path, model)
    record = read_json(path / "steerable.json", "a saved steering intervention")
    kind = record.get("type")
    if kind == "steering":
        return Steering.load(path, model)
    if kind == "prompting":
        return Prompting(record["positive"], record["negative"], record.get("name", "prompting"))
    if kind == "lora":
        from .lora import load_lora

        return load_lora(path, model)
    raise ValueError(f"{path / 'steerable.json'} names an unknown intervention type {kind!r}.")
