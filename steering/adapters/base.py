"""What every adapter shares: a coefficient, a sign, trainable parameters and an exact detach.

`AdapterHandle` is the `Steerable` that adapters (InnerPiSSA, LoRA) build on, and what
ReprPO training (`steering.adapters.reprpo`) is typed against: it sets the coefficient,
reads ``trainable_parameters`` and flips the sign. A new adapter type is one module with an
`AdapterHandle` subclass and one `steering.register_loader` registration.

Example:
    >>> class Nothing(AdapterHandle):
    ...     def trainable_parameters(self): return []
    ...     def _apply_coeff(self): pass
    ...     def _remove(self): pass
    >>> handle = Nothing(model=None, name="nothing")
    >>> with handle.coeff(2.0):
    ...     handle.c
    2.0
    >>> handle.c, handle.num_parameters()
    (0.0, 0)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..steerable import Coeff, check_coefficients
from .frozen import release

PeftFactors = tuple[Float[Tensor, "r d_in"], Float[Tensor, "d_out r"]]  # (A, B): the weight change is B @ A


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

    def adapted_layers(self) -> list[int]:
        """The layers whose modules this adapter changes (ReprPO reads its loss at or after the deepest)."""
        raise NotImplementedError

    # -- parameters ----------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    # -- the PEFT view (steering.adapters.peft_folders) -------------------------
    def peft_alpha(self) -> float | None:
        """PEFT's ``lora_alpha`` for `peft_factors`; None: alpha = r for every module (scaling 1)."""
        return None

    def peft_factors(self, c: float) -> dict[str, PeftFactors]:
        """Weight path -> ``(A, B)`` with ``B @ A`` the adapter's weight change at ``c``, for `export_peft`."""
        raise TypeError(f"{type(self).__name__} cannot be written as a PEFT LoRA folder (it defines no peft_factors).")

    def weight_change_norm(self, c: float = 1.0) -> float | None:
        """‖ΔW(c)‖_F over every adapted weight (the root of the summed squares), from `peft_factors` with
        PEFT's ``alpha / r`` scaling; None for an adapter without them. Compares ablations at matched ‖ΔW‖."""
        try:
            factors = self.peft_factors(c)
        except TypeError:
            return None
        alpha, total = self.peft_alpha(), 0.0
        with torch.no_grad():
            for A, B in factors.values():
                scaling = alpha / A.shape[0] if alpha is not None else 1.0
                total += float((B.double() @ A.double()).square().sum()) * scaling**2
        return math.sqrt(total)

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
