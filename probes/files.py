"""Files that are either complete or absent, and JSON that fails with a useful message.

Every file steerscope writes for later reading (manifests, configs, results
tables, shards, cached SVDs) goes through `write_atomic`: it writes a temporary
file beside the target, flushes it to disk and renames it over the target, so a
run killed at any instant leaves the old file or the new one, never half of one.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = write_json(folder / "config.json", {"layers": [3, 5]})
    >>> read_json(folder / "config.json", "the sweep's configuration")
    {'layers': [3, 5]}
    >>> read_json(folder / "missing.json", "the sweep's configuration")
    Traceback (most recent call last):
    ...
    FileNotFoundError: .../missing.json is missing: it should hold the sweep's configuration.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, data: str | bytes | Callable[[Path], None]) -> Path:
    """Write ``data`` (text, bytes, or a function that writes a given path) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(temporary_name)
    try:
        if callable(data):
            os.close(handle)
            data(temporary)
            with open(temporary, "rb+") as written:
                os.fsync(written.fileno())
        else:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data.encode("utf-8") if isinstance(data, str) else data)
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, value: Any) -> Path:
    return write_atomic(path, json.dumps(value, indent=1, default=str) + "\n")


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; a missing, truncated or garbled file raises an error naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: it should hold {what}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is damaged (not valid JSON: {error}); it should hold {what}. It was probably cut off "
            "by a killed run or edited by hand: restore it, or delete the folder and start again."
        ) from None
