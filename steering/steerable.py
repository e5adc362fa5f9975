"""The contract for everything that steers, and the registry that reads saved ones back.

A `Steerable` changes what the model does as a function of a coefficient c, and
c = 0 is the base model exactly. Every consumer (dose-response, the method
comparison, training, generation) goes through `steering.applied`:

    with applied(model, intervention, c):
        ...                       # every forward inside is steered at c

``c`` (a `Coeff`) is one number, or one per batch row when the steerable is ``per_row``.
`Steerable.prompt_prefix(c)` is text placed before each prompt at that coefficient (only
prompting uses it), so "steering by asking" is measured by the same machinery.

A saved steerable is a folder whose ``steerable.json`` names its ``type``; each
implementation registers how to read its type back (`register_loader`, like
`steering.register` for direction methods), so `load_steerable` never changes when a
type is added. This module imports no other steering module: plans (`steering.plans`),
adapters (`steering.adapters`) and prompting build on it.

Example:
    >>> check_coefficients([-1, 0, 1]).tolist()
    [-1.0, 0.0, 1.0]
    >>> check_coefficients(float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: coeff=nan is not finite: steering coefficients must be real numbers (c = 0 is the base model).
    >>> sorted(LOADERS)  # what steering registers on import
    ['innerpissa', 'lora', 'prompting', 'steering']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from probes.files import read_json

STEERABLE_FILE = "steerable.json"  # every saved steerable's record; its "type" picks the loader

Coeff = float | Sequence[float] | Float[Tensor, " batch"] | Float[Tensor, ""]  # one c, or one per batch row


def check_coefficients(coeff: Coeff) -> Tensor:
    """``coeff`` as a float tensor (scalar or one value per row), refusing NaN and infinities."""
    try:
        values = torch.as_tensor(coeff, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"coeff={coeff!r}: give a number, or one number per batch row.") from None
    if values.ndim > 1:
        raise ValueError(f"coeff has shape {tuple(values.shape)}: give a number, or one number per batch row.")
    if not torch.isfinite(values).all():
        raise ValueError(f"coeff={coeff!r} is not finite: steering coefficients must be real numbers (c = 0 is the base model).")
    return values


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


@dataclass(frozen=True)
class Loader:
    """How one type of saved steerable is read back (see `register_loader`)."""

    type: str
    load: Callable[[Path, Any], Steerable]
    marker: str | None = None
    example: Callable[[Any], Steerable] | None = None


LOADERS: dict[str, Loader] = {}
L = TypeVar("L", bound=Callable[..., Any])


def register_loader(type_name: str, *, marker: str | None = None, example: Callable[[Any], Steerable] | None = None) -> Callable[[L], L]:
    """Decorate ``load(path, model) -> Steerable`` as the reader of folders whose ``steerable.json`` says
    ``"type": type_name``.

    ``marker`` names a file that identifies this type's folders written without ``steerable.json``
    (InnerPiSSA's ``adapter.json``). ``example(model)`` builds a small instance on a model: the
    contract tests (tests/test_steerable_contract.py) run every registered type through identity
    at c = 0, an exact detach, per-row c, save and load, and one ReprPO step for adapters.
    """

    def decorate(load: L) -> L:
        known = LOADERS.get(type_name)
        if known is not None and known.load.__qualname__ != load.__qualname__:
            raise ValueError(f"Steerable type {type_name!r} is already read by {known.load.__qualname__}: choose another name.")
        LOADERS[type_name] = Loader(type_name, load, marker, example)
        return load

    return decorate


def saved_type(path: Path) -> str:
    """The type of the steerable saved in folder ``path``."""
    if not (path / STEERABLE_FILE).exists():
        for loader in LOADERS.values():
            if loader.marker is not None and (path / loader.marker).exists():
                return loader.type
    record = read_json(path / STEERABLE_FILE, "a saved steering intervention")
    return str(record.get("type"))


def load_steerable(path: str | Path, model: Any) -> Steerable:
    """Read back anything `Steerable.save` wrote (adapters attach themselves to ``model``)."""
    path = Path(path)
    type_name = saved_type(path)
    loader = LOADERS.get(type_name)
    if loader is None:
        raise ValueError(
            f"{path / STEERABLE_FILE} names an unknown intervention type {type_name!r}; this steerscope reads "
            f"{', '.join(sorted(LOADERS))} (a new type registers its reader with steering.register_loader)."
        )
    return loader.load(path, model)
