"""Checking files against what was written: a file's size and SHA-256, and a manifest's hash of its own content.
Databases (`index`) and bundles (`bundles`) record these and check them before use."""
from __future__ import annotations

import hashlib
import json
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
