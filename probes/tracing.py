"""The one boundary between steerscope and nnsight.

Everything steerscope needs from nnsight goes through here: wrapping a model,
opening a (possibly remote) trace, the "every forward" loop of an edit, and the
list of edits an envoy replays. Inside a traced block only torch and nnsight's
public names appear (``nnsight.save``, ``tracer.stop()``, envoys): the block is
what travels to NDIF, where steerscope is not installed.
Only this module touches nnsight's private parts (``Envoy._module``, ``Envoy._edits``,
``nnsight.intervention.iterator.Iterations``), so a new nnsight release is adapted here, once.
The supported range is `SUPPORTED` (also in ``pyproject.toml``); another version
gets a clear error on import.

Example:
    with tracing.trace(model, batch.model_inputs(), remote=False) as tracer:
        hidden = nnsight.save(model.get("model.layers.3").output)
        tracer.stop()
    tracing.torch_module(model).generate(**inputs)
"""

from __future__ import annotations

import warnings
from importlib.metadata import version
from typing import Any

SUPPORTED = ("0.8", "0.9")  # nnsight: at least the first, below the second
SUPPORTED_TRANSFORMERS = ("4.46", "6")  # the same for transformers (pyproject.toml states both)


def parse(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:2] if part.isdigit())


def check_version(installed: str | None = None, package: str = "nnsight", supported: tuple[str, str] = SUPPORTED) -> str:
    """The installed version of ``package``, or an ImportError that says which range steerscope supports."""
    installed = installed or version(package)
    low, high = supported
    if not parse(low) <= parse(installed) < parse(high):
        raise ImportError(
            f"steerscope supports {package} >={low},<{high}; {package} {installed} is installed. "
            f"Install a supported one: pip install '{package}>={low},<{high}' (or the tested versions: bash scripts/setup.sh)."
        )
    return installed


check_version()
check_version(package="transformers", supported=SUPPORTED_TRANSFORMERS)

from nnsight.intervention.iterator import Iterations  # noqa: E402  (after the version check above)

from . import ndif_versions  # noqa: E402


def language_model(model_or_name: Any, tokenizer: Any) -> Any:
    """An nnsight ``LanguageModel`` around a transformers model (or, for remote use, a Hub id)."""
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        # nnsight 0.8 prefers TransformersModel; LanguageModel is its text-generation subclass.
        warnings.simplefilter("ignore", FutureWarning)
        return LanguageModel(model_or_name, tokenizer=tokenizer)


def torch_module(model: Any) -> Any:
    """The plain torch module (a transformers model) behind an nnsight model, or the module itself."""
    return getattr(model, "_module", model)


def trace_options(remote: Any) -> dict[str, Any]:
    """Keyword arguments for ``model.trace`` that send it where ``remote`` says."""
    return {"remote": remote} if remote else {}


def trace(model: Any, inputs: Any, remote: Any = False) -> Any:
    """``model.trace(inputs)``, on NDIF when ``remote`` is True (nnsight's local dry run for ``"local"``).

    Returns nnsight's tracer itself: nnsight runs the source of the ``with`` block that enters it,
    so the ``with`` must stand in the caller's code (a wrapping context manager would hide it).
    Before the first trace to an NDIF server, its nnsight version is checked against this one
    (`probes.ndif_versions`).
    """
    if remote is True:
        ndif_versions.check_server()
    return model.trace(inputs, **trace_options(remote))


# ``Iterations()[:]`` inside an edit block is the loop that runs at every forward (each generated
# token too): what ``tracer.iter[:]`` returns, without naming the editing tracer in the block (it
# would be shipped with a remote request). Use it as ``for _ in Iterations()[:]:``; the class
# pickles by its own module (nnsight's), so the block still travels without steerscope.
__all__ = [
    "SUPPORTED",
    "Iterations",
    "check_version",
    "edits",
    "language_model",
    "remove_edits",
    "torch_module",
    "trace",
    "trace_options",
]


def edits(model: Any) -> list:
    """The edits (mediators) an nnsight model replays on every trace."""
    return list(model._edits)


def remove_edits(model: Any, mediators: list) -> None:
    """Drop exactly ``mediators``, keeping every other edit (``clear_edits`` would drop the user's too)."""
    model._edits = [m for m in model._edits if all(m is not ours for ours in mediators)]
