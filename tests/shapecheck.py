"""A typechecker for jaxtyping's import hook that checks tensor shapes and dtypes only.

The library annotates tensors as ``Float[Tensor, "pair side d"]``. During the tests every
function of ``probes``, ``steering`` and ``analysis`` is wrapped (see ``conftest.py``): each
argument and return value annotated with a jaxtyping array type (also inside ``X | None``
and ``tuple[...]``) must match it, with named dimensions agreeing across the call. Other
annotations are left to mypy, so the library's own checks of bad input still run and
still give their messages.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from jaxtyping import AbstractArray, jaxtyped


def is_array_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, AbstractArray)


def loosely_isinstance(value: Any, annotation: Any) -> bool:
    """isinstance against an annotation's runtime class; True where that cannot be checked (Any, Literal …)."""
    if annotation is Any:
        return True
    if annotation is float:  # the numeric tower: an int is a float to type checkers
        return isinstance(value, (int, float))
    try:
        return isinstance(value, typing.get_origin(annotation) or annotation)
    except TypeError:
        return True


def matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits the array parts of ``annotation`` (anything else passes)."""
    if is_array_type(annotation):
        return isinstance(value, annotation)
    origin, parts = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        arrays = [p for p in parts if is_array_type(p)]
        if not arrays or any(loosely_isinstance(value, p) for p in parts if not is_array_type(p)):
            return True
        return any(isinstance(value, p) for p in arrays)
    if origin is tuple and isinstance(value, tuple) and parts and parts[-1] is not Ellipsis and len(parts) == len(value):
        return all(matches(v, p) for v, p in zip(value, parts))
    return True


def shapes_only(fn: Callable) -> Callable:
    """Wrap ``fn`` so its jaxtyping-annotated arguments and return value are checked on every call."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn
    hints: dict[str, Any] | None = None

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        nonlocal hints
        if hints is None:  # resolved at the first call: forward references exist by then
            try:
                hints = typing.get_type_hints(fn)
            except Exception:
                hints = {}
        if hints:
            bound = signature.bind(*args, **kwargs)
            for name, value in bound.arguments.items():
                if name in hints and not matches(value, hints[name]):
                    raise TypeError(
                        f"{fn.__qualname__}: argument {name!r} does not match {hints[name]} "
                        f"(got {getattr(value, 'dtype', type(value).__name__)} {tuple(getattr(value, 'shape', ()))})."
                    )
        result = fn(*args, **kwargs)
        if hints and "return" in hints and not matches(result, hints["return"]):
            raise TypeError(f"{fn.__qualname__}: its result does not match {hints['return']}.")
        return result

    return functools.wraps(fn)(jaxtyped(checked, typechecker=None))  # one memo of named dims per call
