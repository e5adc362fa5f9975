"""Where a model's traces run: here, or on NDIF through nnsight's remote execution.

steerscope has no remote engine of its own. ``remote=True`` is handed to
``model.trace(..., remote=True)``: nnsight serializes the trace block (its source
and the tensors it references), sends it to the NDIF server that holds the
model, and returns the values the block saved. ``remote="local"`` runs the same
serialize/deserialize round trip in this process (nnsight's dry run).

The API key is nnsight's business: set ``NDIF_API_KEY`` in the environment or
call ``nnsight.CONFIG.set_default_api_key("...")`` once. steerscope never reads,
passes or stores it.

Functions that take ``remote=None`` use the model's own setting, given when it
was loaded (``probes.load_model(name, remote=True)``), so a whole study follows
the model.

Example:
    model = probes.load_model("meta-llama/Llama-3.1-70B-Instruct", remote=True)
    acts = probes.collect(model, pairs, layers=[40], sublayers="resid")   # runs on NDIF
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any
from weakref import WeakKeyDictionary

from torch import nn

from . import tracing

LOOPBACK = ("127.0.0.1", "localhost", "::1")  # a server on this machine: a local NDIF (steerscope ndif up)
Remote = bool | str  # False, True (NDIF) or "local" (nnsight's in-process dry run of the remote path)
defaults: WeakKeyDictionary[nn.Module, Remote] = WeakKeyDictionary()  # per model: where its traces run


def set_remote(model: Any, remote: Remote) -> None:
    """Record where ``model``'s traces run by default."""
    check_remote(remote)
    defaults[tracing.torch_module(model)] = remote


def resolve_remote(model: Any, remote: Remote | None = None) -> Remote:
    """``remote`` if given, else the model's default (``False`` unless loaded with ``remote=``)."""
    if remote is None:
        return defaults.get(tracing.torch_module(model), False)
    check_remote(remote)
    return remote


def check_remote(remote: Any) -> None:
    if remote not in (True, False, "local"):
        raise ValueError(f"remote={remote!r}: use False (run here), True (NDIF) or 'local' (nnsight's local dry run).")


def has_weights(model: Any) -> bool:
    """False for a model loaded for remote use (its weights are on the meta device, only NDIF has them)."""
    return next(tracing.torch_module(model).parameters()).device.type != "meta"


def require_weights(model: Any, what: str) -> None:
    """Raise a clear error when ``what`` needs weights this process does not have."""
    if not has_weights(model):
        raise NotImplementedError(
            f"{what} needs the model's weights in this process, but this model was loaded for "
            "remote execution (its weights live on NDIF). Remote runs support collect, "
            "activation-space steer and dose-response; load the model locally "
            "(probes.load_model(name, device_map='auto', dtype='bfloat16')) for this step."
        )


def name_folder_by_its_path(name: str) -> None:
    """Make nnsight's key for a model loaded from the local folder ``name`` carry the folder's absolute path.

    nnsight names a remote model by its canonical Hugging Face id, which it asks the Hub
    for; a folder has none, and the Hub cannot be reached offline. A local NDIF (`steerscope
    ndif up`, on this machine or a shared file system) loads the model from that same path.
    Left to nnsight: a name it already knows (one a test registered), and a folder spelled
    like a Hub id (``meta-llama/Llama-3.1-8B``) unless the server is on this machine, since
    the public NDIF knows the model by that id and not by a path of this machine.
    """
    from urllib.parse import urlparse

    from nnsight import CONFIG
    from nnsight.modeling.huggingface import _ID_CACHE

    if not os.path.isdir(name):
        return
    spelled_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not name.startswith(".")
    if spelled_like_hub_id and urlparse(CONFIG.API.HOST).hostname not in LOOPBACK:
        return
    _ID_CACHE.setdefault(name, os.path.abspath(name))


def warn_if_no_api_key() -> None:
    """Warn (once per call site) when nnsight has no NDIF API key configured."""
    from urllib.parse import urlparse

    from nnsight import CONFIG

    if urlparse(CONFIG.API.HOST).hostname in LOOPBACK:
        return  # a local NDIF (steerscope ndif up) checks no key
    if not CONFIG.API.APIKEY:
        warnings.warn(
            "No NDIF API key is configured, so remote traces will be refused. Set NDIF_API_KEY "
            "in the environment or run nnsight.CONFIG.set_default_api_key('<key>') once "
            "(keys: https://login.ndif.us).",
            stacklevel=3,
        )
