"""Where the project's files are: bundled assets (the toy model, example images) and built data (`indexes/`)."""
from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TOY_DIR = ASSETS / "toy"
INDEXES = Path(os.environ.get("INTERPRET_INDEXES", ASSETS.parent / "indexes"))


def home() -> Path:
    """Everything the app writes that is not a model's own index folder: fetched bundles, visitors' uploads and
    databases. `INTERPRET_HOME`; else /data/interpret on a Hugging Face Space with persistent storage (mounted
    at /data); else ~/.cache/interpret."""
    if os.environ.get("INTERPRET_HOME"):
        return Path(os.environ["INTERPRET_HOME"])
    if os.environ.get("SPACE_ID") and os.access("/data", os.W_OK):
        return Path("/data/interpret")
    return Path.home() / ".cache" / "interpret"
