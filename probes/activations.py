"""`Activations`: captured hidden states indexed by (layer, sublayer kind).

Each entry is ``Float[Tensor, "pair side token d"]``: side 0 is the positive
text, side 1 the negative; ``token`` holds the last real positions in order.

Example:
    acts = probes.collect(model, pairs, layers="all", sublayers=("resid", "up"))
    acts[12, "resid"].shape          # (pairs, 2, tokens, d_model)
    acts.diff[12, "up"].shape        # positive − negative: (pairs, tokens, d_ff)
    acts.save("acts.safetensors"); acts = probes.Activations.load("acts.safetensors")
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from .pairs import ContrastivePair

Key = tuple[int, str]


class SideView:
    """``acts.positive[layer, kind]`` style access to a function of each entry."""

    def __init__(self, activations: Activations, select: Callable[[Tensor], Tensor], name: str):
        self.activations = activations
        self.select = select
        self.name = name

    def __getitem__(self, key: Key) -> Float[Tensor, "pair token d"]:
        return self.select(self.activations[key])

    def __repr__(self) -> str:
        return f"<{self.name} view of {self.activations!r}>"


@dataclass
class Activations:
    """Captured states for contrastive pairs, keyed by ``(layer, kind)``."""

    data: Mapping[Key, Float[Tensor, "pair side token d"]]  # a dict, or lazily read shards (probes.shards)
    pairs: list[ContrastivePair] = field(default_factory=list)
    n_layers: int | None = None
    model_name: str | None = None

    # -- access --------------------------------------------------------------
    def normalize_key(self, key: Key) -> Key:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise KeyError(f"Index Activations as acts[layer, kind], e.g. acts[3, 'resid']; got {key!r}.")
        layer, kind = key
        if isinstance(layer, int) and layer < 0 and self.n_layers is not None:
            layer += self.n_layers
        if (layer, kind) not in self.data:
            raise KeyError(
                f"No activations for layer {key[0]!r}, kind {kind!r}. Captured layers: {self.layers}; kinds: {list(self.kinds)}."
            )
        return layer, kind

    def __getitem__(self, key: Key) -> Float[Tensor, "pair side token d"]:
        return self.data[self.normalize_key(key)]

    def __contains__(self, key: Key) -> bool:
        try:
            self.normalize_key(key)
            return True
        except KeyError:
            return False

    def __iter__(self) -> Iterator[Key]:
        return iter(self.data)

    def keys(self):
        return self.data.keys()

    def items(self):
        return self.data.items()

    @property
    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.data})

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(kind for _, kind in self.data))

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The streamed capture's manifest (`probes.shards`), or None for activations held in memory."""
        return getattr(self.data, "manifest", None)

    @property
    def n_pairs(self) -> int:
        if self.manifest is not None:
            return self.manifest["n_pairs"]
        return next(iter(self.data.values())).shape[0] if self.data else 0

    @property
    def n_tokens(self) -> int:
        if self.manifest is not None:
            return self.manifest["tokens"]
        return next(iter(self.data.values())).shape[2] if self.data else 0

    @property
    def positive(self) -> SideView:
        return SideView(self, lambda hs: hs[:, 0], "positive")

    @property
    def negative(self) -> SideView:
        return SideView(self, lambda hs: hs[:, 1], "negative")

    @property
    def diff(self) -> SideView:
        return SideView(self, lambda hs: hs[:, 0] - hs[:, 1], "diff (positive - negative)")

    def nbytes(self) -> int:
        manifest = self.manifest
        if manifest is not None:  # streamed: computed without loading the shards
            dims = self.dims()
            itemsize = torch.empty(0, dtype=getattr(torch, manifest["dtype"])).element_size()
            return sum(self.n_pairs * 2 * self.n_tokens * itemsize * dims[kind] for _, kind in self.data)
        return sum(t.numel() * t.element_size() for t in self.data.values())

    def dims(self) -> dict[str, int]:
        """Feature size per kind."""
        streamed = getattr(self.data, "dims", None)  # read from the shards' headers
        if streamed is not None:
            return dict(streamed)
        return {kind: t.shape[-1] for (_, kind), t in self.data.items()}

    # -- display ---------------------------------------------------------------
    def __repr__(self) -> str:
        if not self.data:
            return "Activations(empty)"
        layers = self.layers
        span = (
            f"{layers[0]}–{layers[-1]}"
            if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 1
            else ", ".join(map(str, layers))
        )
        kinds = ", ".join(f"{k}[{d}]" for k, d in self.dims().items())
        dtype = self.manifest["dtype"] if self.manifest is not None else next(iter(self.data.values())).dtype
        model = f", model={self.model_name!r}" if self.model_name else ""
        return (
            f"Activations({self.n_pairs} pairs × 2 sides × {self.n_tokens} token(s); "
            f"layers {span} ({len(layers)}); kinds {kinds}; {len(self.data)} tensors, "
            f"{self.nbytes() / 1e6:.1f} MB {str(dtype).replace('torch.', '')}{model})"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{kind}</td><td>{d}</td><td>{sum(1 for _, k in self.data if k == kind)}</td></tr>" for kind, d in self.dims().items()
        )
        return (
            f"<b>Activations</b>: {self.n_pairs} pairs × 2 sides × {self.n_tokens} token(s), "
            f"layers {self.layers[0] if self.data else ''}…{self.layers[-1] if self.data else ''}"
            f"<table><tr><th>kind</th><th>d</th><th>layers</th></tr>{rows}</table>"
        )

    # -- persistence -----------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write all tensors and metadata (pairs, model, layer count) to one safetensors file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"{layer}/{kind}": t.contiguous() for (layer, kind), t in self.data.items()}
        metadata = {
            "format": "steerscope.activations/1",
            "n_layers": json.dumps(self.n_layers),
            "model_name": json.dumps(self.model_name),
            "pairs": json.dumps([[p.positive, p.negative] for p in self.pairs]),
        }
        save_file(tensors, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Activations:
        """Read a file written by `save`."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != "steerscope.activations/1":
            raise ValueError(f"{path} is not a steerscope Activations file (no steerscope metadata).")
        tensors = load_file(str(path))
        data = {}
        for name, tensor in tensors.items():
            layer, kind = name.split("/", 1)
            data[(int(layer), kind)] = tensor
        return cls(
            data=dict(sorted(data.items(), key=lambda item: item[0][0])),
            pairs=[ContrastivePair(*p) for p in json.loads(metadata["pairs"])],
            n_layers=json.loads(metadata["n_layers"]),
            model_name=json.loads(metadata["model_name"]),
        )

    def to(self, *args: Any, **kwargs: Any) -> Activations:
        return Activations({k: v.to(*args, **kwargs) for k, v in self.data.items()}, self.pairs, self.n_layers, self.model_name)
