"""Streamed captures: one safetensors shard per batch, read back lazily.

``collect(..., out=folder)`` writes ``manifest.json`` (what is being captured) and
``shard_00000.safetensors`` … as each batch finishes (atomically: a shard is
either complete or absent), holding only one batch in memory. A rerun with the
same arguments skips the shards already there, so an interrupted capture
continues where it stopped. The returned `Activations` reads one
``(layer, kind)`` at a time from the shards when it is indexed.

Example:
    >>> acts = probes.collect(model, pairs, layers="all", sublayers=("resid", "down"), out="captures/honesty")
    >>> acts = probes.shards.open_activations("captures/honesty")   # later, in another process
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .activations import Activations
from .pairs import ContrastivePair

MANIFEST = "manifest.json"


def texts_digest(pairs: list[ContrastivePair]) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(pair.positive.encode() + b"\0" + pair.negative.encode() + b"\1")
    return digest.hexdigest()


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard_{index:05d}.safetensors"


def prepare(folder: Path, manifest: dict[str, Any], pairs: list[ContrastivePair]) -> None:
    """Create the folder and its manifest, or check that an existing one describes the same capture."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(json.dumps(manifest))  # as it reads back (tuples become lists)
    path = folder / MANIFEST
    if path.exists():
        existing = json.loads(path.read_text())
        differs = [k for k in manifest if k != "pairs" and existing.get(k) != manifest[k]]
        if differs:
            raise ValueError(f"{folder} holds a different capture (differs in {differs}); choose another out folder or delete it.")
        return
    path.write_text(json.dumps(manifest | {"pairs": [[p.positive, p.negative] for p in pairs]}))


def save_shard(folder: Path, index: int, captured: dict[tuple[int, str], Tensor], text_index: Tensor) -> None:
    tensors = {f"{layer}/{kind}": values.contiguous() for (layer, kind), values in captured.items()}
    tensors["text_index"] = text_index.contiguous()
    target = shard_path(folder, index)
    temporary = target.with_suffix(".tmp")
    save_file(tensors, str(temporary))
    temporary.replace(target)


class ShardedData(Mapping):
    """``(layer, kind) -> [pair, side, token, d]`` assembled from the shards on access."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder = folder
        self.manifest = manifest
        self.keys_ = [(int(layer), kind) for layer, kind in manifest["keys"]]
        self.shards = [shard_path(folder, i) for i in range(manifest["n_batches"])]
        with safe_open(str(self.shards[0]), framework="pt") as handle:
            self.dims = {kind: handle.get_slice(f"{layer}/{kind}").get_shape()[-1] for layer, kind in self.keys_}

    def __getitem__(self, key: tuple[int, str]) -> Tensor:
        if key not in self.keys_:
            raise KeyError(key)
        layer, kind = key
        n_pairs, tokens = self.manifest["n_pairs"], self.manifest["tokens"]
        result = torch.empty((n_pairs * 2, tokens, self.dims[kind]), dtype=getattr(torch, self.manifest["dtype"]))
        for shard in self.shards:
            with safe_open(str(shard), framework="pt") as handle:
                result[handle.get_tensor("text_index")] = handle.get_tensor(f"{layer}/{kind}")
        return result.view(n_pairs, 2, tokens, -1)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


def open_activations(folder: str | Path) -> Activations:
    """Lazily loaded `Activations` of a finished streamed capture."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    missing = [p.name for p in (shard_path(folder, i) for i in range(manifest["n_batches"])) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{folder} is an unfinished capture ({len(missing)} shards missing); rerun the same collect(..., out=...) to finish it.")
    return Activations(ShardedData(folder, manifest), pairs=[ContrastivePair(*p) for p in manifest["pairs"]],
                       n_layers=manifest["n_layers"], model_name=manifest["model_name"])
