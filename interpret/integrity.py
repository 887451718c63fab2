"""Writing files so that a reader never sees half of one, and checking them against what was written: a file's
size and SHA-256, and a manifest's hash of its own content. Databases (`index`) and bundles (`bundles`) record
these and check them before use. And reading them once: `LoadedFiles` keeps what was loaded from files while
they stay the same."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence


def describe_file(path: Path) -> dict:
    """A file's size and SHA-256 (read in 1 MB blocks): {"bytes": ..., "sha256": ...}."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(2 ** 20), b""):
            digest.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def content_hash(manifest: dict, own_key: str) -> str:
    """SHA-256 of a manifest's content without its own hash (stored under `own_key`), keys sorted."""
    content = {key: value for key, value in manifest.items() if key != own_key}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def write_json_atomic(path: Path, payload) -> None:
    """Write JSON to a temporary file beside `path` (a unique name: writers never share one), then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(json.dumps(payload, indent=1))
    os.replace(temporary, path)


def write_hashed_manifest(path: Path, manifest: dict, own_key: str) -> None:
    """Write a manifest atomically, with the hash of its own content under `own_key` (`content_hash`)."""
    write_json_atomic(path, {**manifest, own_key: content_hash(manifest, own_key)})


class LoadedFiles:
    """What was loaded from files (a database by its manifest, head labels by their file, an SAE, neuron
    directions), by the file's path: loaded once, loaded again when the file (or one of the files it goes with)
    changes (a visitor's rebuild), the `kept` most recently used kept (thread-safe; a load runs under the lock, so
    two requests never load the same file twice at once)."""

    def __init__(self, kept: int):
        self.kept = kept
        self._loaded: OrderedDict[Path, tuple[tuple[int, ...], object]] = OrderedDict()  # path -> (stamps, value)
        self._lock = threading.Lock()

    def get(self, path: Path, load: Callable[[], object], also: Sequence[Path] = ()):
        """What `load()` gives for `path`, loaded again when it or one of the files `also` has changed since."""
        def stamps() -> tuple[int, ...]:
            return tuple(_stamp(file) for file in (path, *also))

        with self._lock:
            if path not in self._loaded or self._loaded[path][0] != stamps():
                value = load()
                self._loaded[path] = (stamps(), value)  # as the files are after loading (a load may write them)
            self._loaded.move_to_end(path)
            while len(self._loaded) > self.kept:
                self._loaded.popitem(last=False)
            return self._loaded[path][1]


def _stamp(path: Path) -> int:
    """When `path` was last written (nanoseconds), or -1 when there is no such file."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1
