"""A stand-in for NDIF: nnsight's own ``RemoteBackend`` with only its network hop replaced.

Everything up to the network is nnsight's code: choosing the backend for
``remote=True``, naming the model by key, reading the API key from its config,
serializing the trace block. The "server" then does what NDIF does with the
request: it deserializes it, with steerscope's packages made unimportable (NDIF
does not have them), and runs it against its own copy of the model, twice:

- on a twin whose weights are on the ``meta`` device: anything in the block that
  copies a value to the CPU (``.cpu()``, ``.item()``, ``.tolist()``, ``.numpy()``)
  fails there with "Cannot copy out of meta tensor";
- on a twin with the real weights, whose saved values go back to the caller as a
  finished NDIF job's do (nnsight's own ``RemoteBackend`` pushes them).
"""

from __future__ import annotations

import copy
import importlib.abc
import sys
from contextlib import contextmanager
from dataclasses import dataclass

from nnsight.intervention.backends.remote import RemoteBackend
from nnsight.schema.request import RequestModel
from nnsight.tracing.tracer import _saves

import probes
from probes import sublayers as sl

STEERSCOPE_PACKAGES = ("probes", "steering", "analysis", "steerscope")


@dataclass
class Request:
    """What one remote trace carried."""

    model_key: str
    api_key: str
    host: str
    payload_bytes: int
    edits: int  # nnsight edits that travelled with the model
    via_object_store: bool | None = None  # the result came back as a download (a real NDIF's large results)


class BlockSteerscope(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in STEERSCOPE_PACKAGES:
            raise ModuleNotFoundError(f"No module named {name!r} (the NDIF server does not have steerscope)")
        return None


@contextmanager
def without_steerscope():
    """Make steerscope's packages unimportable, as on the server."""
    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] in STEERSCOPE_PACKAGES}
    blocker = BlockSteerscope()
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
        sys.modules.update(hidden)


def server_twins(model):
    """A meta-device twin and a real-weights twin of a local nnsight model."""
    real = probes.wrap(copy.deepcopy(sl.unwrap(model)), model.tokenizer)
    meta = probes.wrap(copy.deepcopy(sl.unwrap(model)), model.tokenizer)
    sl.unwrap(meta).to("meta")
    return meta, real


def ndif_double(servers, requests: list[Request]):
    """A ``RemoteBackend`` class whose "server" runs each request on ``servers`` (meta twin first, real last)."""

    class NDIFDouble(RemoteBackend):
        def request(self, request, tracer):
            blob = self._serialize(tracer)
            result = None
            for server in servers:
                with without_steerscope():
                    restored = RequestModel.deserialize(blob, server._remoteable_persistent_objects(), compress=self.compress)
                    restored.execute(restored.info.code)
                frame = restored.info.frame.f_locals
                result = {name: value for name, value in frame.items() if id(value) in _saves()}
            edits = len(getattr(frame.get("model"), "_edits", []))
            requests.append(Request(request.model_key, self.api_key, self.host, len(blob), edits))
            return result

    return NDIFDouble


def recording_backend(requests: list[Request]):
    """nnsight's own ``RemoteBackend``, unchanged, recording what each request to a real NDIF carried.

    ``edits`` counts the model's edits on this side (they travel with the model); whether the result
    came back over the websocket or as a download from NDIF's object store is recorded when it arrives.
    """

    class RecordingBackend(RemoteBackend):
        def request(self, request, tracer):
            edits = len(getattr(getattr(tracer, "envoy", None), "_edits", []))
            requests.append(Request(request.model_key, self.api_key, self.host, -1, edits))
            return super().request(request, tracer)

        def download_result(self, url):
            requests[-1].via_object_store = isinstance(url, str) and bool(url)
            return super().download_result(url)

    return RecordingBackend
