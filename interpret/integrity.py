"""Writing files so that a reader never sees half of one, and checking them against what was written: a file's
size and SHA-256, and a manifest's hash of its own content. Databases (`index`) and bundles (`bundles`) record
these and check them before use."""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path


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
