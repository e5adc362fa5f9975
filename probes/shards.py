"""Streamed captures: one safetensors shard per batch, checked on every read.

``collect(..., out=folder)`` writes ``manifest.json`` (what is being captured, by
which weights) and ``shard_00000.safetensors`` … as each batch finishes. Every
file is written atomically, and each shard carries a digest of each of its
tensors, so a shard that was cut off or garbled later is recognised: a rerun of
the same ``collect`` recomputes it (with a warning), and reading it raises an
error that names the file. A rerun with other pairs, layers, kinds or weights
is refused instead of mixing two captures. The returned `Activations` reads one
``(layer, kind)`` at a time from the shards when it is indexed.

Example:
    acts = probes.collect(model, pairs, layers="all", sublayers=("resid", "down"), out="captures/honesty")
    acts = probes.shards.open_activations("captures/honesty")   # later, in another process
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .activations import Activations
from .files import read_json, write_atomic, write_json
from .pairs import ContrastivePair

MANIFEST = "manifest.json"
FORMAT = "steerscope.shards/2"
WHAT = "a streamed capture's manifest"


def texts_digest(pairs: list[ContrastivePair]) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(pair.positive.encode() + b"\0" + pair.negative.encode() + b"\1")
    return digest.hexdigest()


def tensor_digest(tensor: Tensor) -> str:
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.blake2b(data.numpy().tobytes(), digest_size=16).hexdigest()


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard_{index:05d}.safetensors"


def prepare(folder: Path, manifest: dict[str, Any], pairs: list[ContrastivePair]) -> None:
    """Create the folder and its manifest, or check that an existing one describes the same capture."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(json.dumps(manifest | {"format": FORMAT}))  # as it reads back (tuples become lists)
    path = folder / MANIFEST
    if path.exists():
        existing = read_json(path, WHAT)
        differs = [k for k in manifest if existing.get(k) != manifest[k]]
        if differs:
            detail = "; the model's weights are not those that wrote the finished shards" if "weights" in differs else ""
            raise ValueError(
                f"{folder} holds a different capture (it differs in {differs}{detail}). Resuming would mix "
                "the two: choose another out folder, or delete this one to start again."
            )
        return
    write_json(path, manifest | {"pairs": [[p.positive, p.negative] for p in pairs]})


def save_shard(folder: Path, index: int, captured: dict[tuple[int, str], Tensor], text_index: Tensor) -> None:
    tensors = {f"{layer}/{kind}": values.contiguous() for (layer, kind), values in captured.items()}
    tensors["text_index"] = text_index.contiguous()
    digests = json.dumps({name: tensor_digest(tensor) for name, tensor in tensors.items()})
    write_atomic(shard_path(folder, index), lambda temporary: save_file(tensors, str(temporary), metadata={"digests": digests}))


def read_tensors(path: Path, names: list[str] | None = None) -> dict[str, Tensor]:
    """Read (some of) a shard's tensors, checking each against its recorded digest."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            digests = json.loads((handle.metadata() or {})["digests"])
            tensors = {name: handle.get_tensor(name) for name in (names if names is not None else list(handle.keys()))}
    except FileNotFoundError:
        raise FileNotFoundError(f"Shard {path} is missing; rerun the same collect(..., out=...) to recompute it.") from None
    except Exception as error:  # safetensors raises its own error types for truncated or garbled files
        raise ValueError(
            f"Shard {path} is damaged ({type(error).__name__}: {error}). Delete it and rerun the same "
            "collect(..., out=...): only the missing shards are recomputed."
        ) from None
    for name, tensor in tensors.items():
        if digests.get(name) != tensor_digest(tensor):
            raise ValueError(
                f"Shard {path} is damaged: tensor {name!r} does not match its recorded digest. Delete "
                "the shard and rerun the same collect(..., out=...) to recompute it."
            )
    return tensors


def finished_shard(folder: Path, index: int, text_index: Tensor) -> bool:
    """Whether shard ``index`` exists, is intact and holds these texts; a damaged one is deleted."""
    path = shard_path(folder, index)
    if not path.exists():
        return False
    try:
        stored = read_tensors(path)
        if not torch.equal(stored["text_index"], text_index):
            raise ValueError(f"Shard {path} holds other texts than this batch.")
        return True
    except ValueError as error:
        warnings.warn(f"{error} Recomputing it.", stacklevel=3)
        path.unlink()
        return False


class ShardedData(Mapping):
    """``(layer, kind) -> [pair, side, token, d]`` assembled from the shards on access."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder = folder
        self.manifest = manifest
        self.keys_ = [(int(layer), kind) for layer, kind in manifest["keys"]]
        self.shards = [shard_path(folder, i) for i in range(manifest["n_batches"])]
        try:
            with safe_open(str(self.shards[0]), framework="pt") as handle:
                self.dims = {kind: handle.get_slice(f"{layer}/{kind}").get_shape()[-1] for layer, kind in self.keys_}
        except Exception as error:
            raise ValueError(f"Shard {self.shards[0]} is damaged ({error}); delete it and rerun the same collect.") from None

    def __getitem__(self, key: tuple[int, str]) -> Tensor:
        if key not in self.keys_:
            raise KeyError(key)
        layer, kind = key
        n_pairs, tokens = self.manifest["n_pairs"], self.manifest["tokens"]
        result = torch.zeros((n_pairs * 2, tokens, self.dims[kind]), dtype=getattr(torch, self.manifest["dtype"]))
        covered = torch.zeros(n_pairs * 2, dtype=torch.bool)
        for shard in self.shards:
            stored = read_tensors(shard, ["text_index", f"{layer}/{kind}"])
            result[stored["text_index"]] = stored[f"{layer}/{kind}"]
            covered[stored["text_index"]] = True
        if not covered.all():
            missing = (~covered).nonzero().flatten().tolist()
            raise ValueError(
                f"{self.folder}: no shard holds texts {missing[:10]} ({len(missing)} in all); rerun the "
                "same collect(..., out=...) to finish the capture."
            )
        return result.view(n_pairs, 2, tokens, -1)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


def open_activations(folder: str | Path) -> Activations:
    """Lazily loaded `Activations` of a finished streamed capture."""
    folder = Path(folder)
    manifest = read_json(folder / MANIFEST, WHAT)
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"{folder / MANIFEST} is not a {FORMAT} manifest (format {manifest.get('format')!r}); recapture into a new folder."
        )
    missing = [p.name for p in (shard_path(folder, i) for i in range(manifest["n_batches"])) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is an unfinished capture ({len(missing)} shards missing); rerun the same collect(..., out=...) to finish it."
        )
    return Activations(
        ShardedData(folder, manifest),
        pairs=[ContrastivePair(*p) for p in manifest["pairs"]],
        n_layers=manifest["n_layers"],
        model_name=manifest["model_name"],
    )
