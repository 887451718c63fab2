"""Where the project's files are: bundled assets (the toy model, example images) and built data (`indexes/`)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TOY_DIR = ASSETS / "toy"
TOY_POOLED_DIR = ASSETS / "toy-pooled"
# The bundled models trained on the toy world (`python -m interpret train-toy`): a class-token ViT, and one whose
# image tower reads out with SigLIP's attention pooler (toy/trunk.py). Each knows the toy world (bank, scenes).
TOY_MODELS = {"toy": TOY_DIR, "toy-pooled": TOY_POOLED_DIR}
INDEXES = Path(os.environ.get("INTERPRET_INDEXES", ASSETS.parent / "indexes"))


def is_toy(name: str) -> bool:
    """Whether `name` is one of the bundled toy models (trained on the toy world, which checks them)."""
    return name in TOY_MODELS


def home() -> Path:
    """Everything the app writes that is not a model's own index folder: fetched bundles, visitors' uploads and
    databases. `INTERPRET_HOME`; else /data/interpret on a Hugging Face Space with persistent storage (mounted
    at /data); else ~/.cache/interpret."""
    if os.environ.get("INTERPRET_HOME"):
        return Path(os.environ["INTERPRET_HOME"])
    if os.environ.get("SPACE_ID") and os.access("/data", os.W_OK):
        return Path("/data/interpret")
    return Path.home() / ".cache" / "interpret"


def visitor_name(session: str | None) -> str:
    """The name of a visitor's folders: made here from their session id (which the client chooses and may be
    anything: a path, `..`, Unicode, a megabyte), never the id itself. 'local' for the command line's builds."""
    if session is None:
        return "local"
    digest = hashlib.sha256(str(session).encode("utf-8", "surrogatepass")).hexdigest()
    return f"v{digest[:32]}"


def inside(path: str | Path, root: str | Path) -> Path:
    """`path`, resolved, when it lies strictly below `root` (links followed); else `UnsafePath`. Call it before
    anything under `root` is deleted or written."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise UnsafePath(f"Refused to write {resolved}: it is not inside {base}.")
    return resolved


class UnsafePath(RuntimeError):
    """A path the server was about to delete or write lies outside the folder it belongs to (a bug, or an
    attack that got past the names the server makes): nothing is done."""
