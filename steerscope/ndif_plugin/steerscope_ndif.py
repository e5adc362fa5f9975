"""What a local NDIF loads into NDIF's own server processes (imported there, never by steerscope).

This file runs inside the NDIF server's environment (``.venv-ndif``, built by
``scripts/setup_ndif.sh``). ``steerscope ndif up`` puts its folder on the server's
``PYTHONPATH`` and names its classes through NDIF's own hooks:
``NDIF_CONTROLLER_IMPORT_PATH=steerscope_ndif.ControllerActor`` always, and
``NDIF_MODEL_IMPORT_PATH=steerscope_ndif.CPUModelActor`` on a machine without a GPU.
steerscope's packages are not importable there, as on any NDIF server.

What it changes, each measured with ndif 0.1.2, nnsight 0.8.1 and transformers 5.24:

- **A model actor that loads onto the CPU** (``CPUModelActor``). NDIF's own actor
  places the weights on the GPU memory the controller assigned and calls
  ``torch.cuda.synchronize()`` after loading and after each request, which fails
  where torch has no CUDA. This one loads with ``device_map="cpu"``, cannot be parked
  in a CPU cache (there is nothing to park it from) and frees memory without CUDA.
  The controller still schedules by a GPU resource, so ``steerscope ndif up --device
  cpu`` starts Ray declaring one GPU whose memory is the machine's RAM.
- **nnsight from PyPI instead of NDIF's pinned commit.** ``Remotable.describe_checkpoint``
  and ``max_tp_size`` (what the controller sizes a model with) do not take the
  ``trust_remote_code`` argument NDIF's controller passes; and nnsight reads
  transformers' pipeline flags that 5.24 no longer has, so the weightless copy of a
  local folder gets no tokenizer. Both are patched when an actor starts (controller
  and model actors), only where the installed nnsight lacks them: Ray ships an actor
  class by value, so importing this module is not enough to patch the actor's process.
"""

from __future__ import annotations

import gc
import inspect
import logging
from importlib.metadata import version
from typing import Any

import ray
from ndif.services.ray.deployments.controller.controller import _ControllerActor
from ndif.services.ray.deployments.modeling.base import BaseModelDeployment
from nnsight.modeling.huggingface import HuggingFaceModel
from nnsight.modeling.mixins.remotable import Remotable
from nnsight.modeling.transformers import TransformersModel

logger = logging.getLogger("steerscope_ndif")


def _accepts(function: Any, name: str) -> bool:
    parameters = inspect.signature(function).parameters
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _drop_trust_flag(name: str) -> bool:
    """Let ``Remotable.<name>`` take (and ignore) the ``trust_remote_code`` NDIF's controller passes."""
    original = getattr(Remotable, name).__func__
    if _accepts(original, "trust_remote_code"):
        return False

    def accepting(cls: type, *args: Any, trust_remote_code: bool = False, **kwargs: Any) -> Any:
        return original(cls, *args, **kwargs)

    setattr(Remotable, name, classmethod(accepting))
    return True


def _source_a_tokenizer() -> bool:
    """A weightless copy of a text model gets its tokenizer from the checkpoint again.

    nnsight 0.8.1 asks each pipeline class which preprocessors it loads through its
    ``_load_tokenizer``-style flags; transformers 5.24 no longer has those flags, so
    nnsight sources none and ``pipeline()`` fails with "Impossible to guess which
    tokenizer to use" when the controller sizes a model from a local folder.
    """
    original = TransformersModel._loaded_preprocessors
    if getattr(original, "steerscope_patched", False):
        return False

    def loaded_preprocessors(self: Any) -> set[str]:
        found: set[str] = original(self)
        return found or {"tokenizer"}

    loaded_preprocessors.steerscope_patched = True  # type: ignore[attr-defined]
    TransformersModel._loaded_preprocessors = loaded_preprocessors
    return True


def _patch_nnsight() -> list[str]:
    """Make PyPI's nnsight accept what NDIF 0.1.2's controller passes it; returns what was patched (idempotent)."""
    patched = [name for name in ("describe_checkpoint", "max_tp_size") if _drop_trust_flag(name)]
    if _source_a_tokenizer():
        patched.append("_loaded_preprocessors")
    if patched:
        logger.warning(f"steerscope_ndif: nnsight {version('nnsight')} patched for NDIF's controller: {patched}")
    return patched


class CPUModelDeployment(BaseModelDeployment):
    """NDIF's model actor with its weights on the CPU: no GPU placement, no CUDA calls."""

    CACHEABLE = False  # the controller evicts instead of parking weights GPU -> CPU

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _patch_nnsight()  # here, not at import: Ray ships an actor class by value, without importing this module
        super().__init__(*args, **kwargs)

    def load_from_disk(self) -> HuggingFaceModel:
        model = HuggingFaceModel.from_model_key(self.model_key, dispatch=True, dtype=self.dtype_name, device_map="cpu", **self.kwargs)
        model._module.requires_grad_(False)
        logger.info(f"Loaded {self.model_key} onto the CPU ({self.dtype_name})")
        return model

    async def to_cache(self) -> None:
        raise RuntimeError("A CPU model actor cannot be parked in the CPU cache; the controller evicts it instead.")

    def from_cache(self, gpu_mem_bytes_by_id: dict[int, int]) -> None:
        raise RuntimeError("A CPU model actor is never parked, so it is never restored from the cache.")

    def cleanup(self) -> None:
        self.kill_switch.clear()
        self.kill_reason = None
        self.execution_ident = None
        self.model.interleaver.cancel()
        gc.collect()


@ray.remote(num_cpus=1, max_restarts=-1)
class CPUModelActor(CPUModelDeployment):
    """The Ray actor NDIF deploys per model replica when ``NDIF_MODEL_IMPORT_PATH`` names it."""


@ray.remote(num_cpus=1, num_gpus=0, max_restarts=-1, resources={"head": 1})
class ControllerActor(_ControllerActor):
    """NDIF's controller, in a process where nnsight is patched (``NDIF_CONTROLLER_IMPORT_PATH`` names it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _patch_nnsight()
        super().__init__(*args, **kwargs)
