"""Where a model's files are: its folder (`model_folder`), and the bundles that stand in for it, checked before use.

Where a model's folder is found (`model_folder`), in order: `indexes/<slug>` when it holds a database; else the
source `INTERPRET_BUNDLES` names, a local folder with one sub-folder per model or `hf://datasets/ORG/REPO` (only that
model's sub-folder is fetched, into the cache under `INTERPRET_HOME`). A bundle is verified before first use:
a damaged, partial or mismatched one (other weights, another open_clip major version) is refused with a message
that names the file, and never half-used. Building bundles: `bundles`.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import open_clip

from .errors import InterpretError
from .index import MANIFEST
from .integrity import content_hash, describe_file
from .models import ClipModel, ModelSpec
from .paths import INDEXES, home

BUNDLE_MANIFEST = "bundle.json"
HEAD_LABELS = "head_labels.json"
THUMBNAILS = "thumbnails"
THUMBNAIL_SIDE = 256
HUB_PREFIX = "hf://datasets/"


class BundleError(InterpretError):
    """A bundle that is missing, damaged, partial, or made for other weights or another open_clip."""


def thumbnail_of(folder: Path, entry_path: str) -> Path:
    return folder / THUMBNAILS / f"{entry_path}.webp"


# --- checking -----------------------------------------------------------------------------------------------------

def verify_bundle(folder: Path, model: ClipModel) -> dict:
    """The bundle's manifest, once every file matches it and it was made for `model`'s weights with this
    open_clip major version; `BundleError` naming the first file that does not."""
    path = folder / BUNDLE_MANIFEST
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("bundle_sha256") != content_hash(manifest, "bundle_sha256"):
            raise ValueError("its content does not match its hash")
        files = manifest["files"]
    except FileNotFoundError:
        raise BundleError(f"{folder.name} is not a bundle (no {BUNDLE_MANIFEST}); build one with "
                          "python -m interpret bundle.") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise BundleError(f"The bundle {folder.name}: {BUNDLE_MANIFEST} cannot be used ({error}).") from None
    if manifest.get("weights_sha256") != model.weights_hash:
        raise BundleError(f"The bundle {folder.name} ({BUNDLE_MANIFEST}) was made for other weights "
                          f"({str(manifest.get('weights_sha256'))[:12]}) than {model.label} "
                          f"({model.weights_hash[:12]}).")
    if str(manifest.get("open_clip", "")).split(".")[0] != open_clip.__version__.split(".")[0]:
        raise BundleError(f"The bundle {folder.name} was made with open_clip {manifest.get('open_clip')}; this is "
                          f"open_clip {open_clip.__version__} (another major version).")
    for required in (MANIFEST, HEAD_LABELS):
        if required not in files:
            raise BundleError(f"The bundle {folder.name} is partial: it lists no {required}.")
    for name, expected in files.items():
        file = folder / name
        if not file.is_file():
            raise BundleError(f"The bundle {folder.name} is partial: {name} is missing.")
        if file.stat().st_size != expected["bytes"] or describe_file(file)["sha256"] != expected["sha256"]:
            raise BundleError(f"The bundle {folder.name} is damaged: {name} does not match its SHA-256.")
    return manifest


# --- finding ------------------------------------------------------------------------------------------------------

_verified: dict[Path, float] = {}  # bundle folder -> bundle.json's mtime when verified
_lock = threading.Lock()


def model_folder(model: ClipModel) -> Path:
    """Where `model`'s head labels and database are (see the module's docstring): its own `indexes/<slug>` when
    that holds a database, else its verified bundle from `INTERPRET_BUNDLES`, else `indexes/<slug>` (where a
    build goes; the caller says what is missing)."""
    own = model.index_dir
    source = os.environ.get("INTERPRET_BUNDLES", "").strip()
    if (own / MANIFEST).is_file() or not source:
        return own
    with _lock:
        folder = _fetch(source, model) if source.startswith(HUB_PREFIX) else Path(source) / model.slug
        if not folder.is_dir():
            return own
        stamp = (folder / BUNDLE_MANIFEST).stat().st_mtime if (folder / BUNDLE_MANIFEST).is_file() else -1.0
        if _verified.get(folder) != stamp:
            verify_bundle(folder, model)
            _verified[folder] = stamp
        return folder


def stored_labels(spec: ModelSpec) -> Path | None:
    """The head labels of a model (by its picker entry, without loading it) that are on this machine: in its
    index folder, or in a local `INTERPRET_BUNDLES` folder (an hf:// source is not fetched for this)."""
    source = os.environ.get("INTERPRET_BUNDLES", "").strip()
    folders = [INDEXES / spec.slug] + ([Path(source) / spec.slug] if source and not source.startswith(HUB_PREFIX)
                                       else [])
    return next((folder / HEAD_LABELS for folder in folders if (folder / HEAD_LABELS).is_file()), None)


def _fetch(source: str, model: ClipModel) -> Path:
    """The model's sub-folder of a Hugging Face dataset repository, fetched into the cache (only that folder)."""
    from huggingface_hub import snapshot_download

    repository = source[len(HUB_PREFIX):].strip("/")
    try:
        root = snapshot_download(repo_id=repository, repo_type="dataset", allow_patterns=[f"{model.slug}/*"],
                                 cache_dir=str(home() / "hub"))
    except Exception as error:  # offline, no such repository, no access: each a message
        raise BundleError(f"Could not fetch the bundle of {model.label} from {source}: "
                          f"{type(error).__name__}: {str(error)[:200]}") from None
    return Path(root) / model.slug
