"""What the three database tabs share: the model's image database, the gallery of neighbours, and their
controls."""
from __future__ import annotations

import threading

import gradio as gr

from ..errors import InterpretError
from ..index import MANIFEST, ImageIndex, build_command
from ..limits import MAX_NEIGHBOURS, check_number
from ..models import ClipModel
from ..render import missing_image
from ..toy.examples import build_toy_index
from .common import public, status_box

_databases: dict[str, ImageIndex] = {}
_database_lock = threading.Lock()


def database_for(model: ClipModel) -> ImageIndex:
    """The model's image database (`indexes/<model>`), opened once and reopened after a rebuild. For the toy
    model a small toy-world database is built on first use (and rebuilt if it was made with other toy weights)."""
    with _database_lock:
        folder = model.index_dir
        if model.name == "toy" and not any(key.startswith(f"{model.slug}@") for key in _databases):
            build_toy_index(model)  # incremental: nothing to do when it is up to date
        if not (folder / MANIFEST).is_file():
            raise InterpretError(f"No image database for {model.label} yet. Build one once with:  "
                                 f"{build_command(model)}")
        key = f"{model.slug}@{(folder / MANIFEST).stat().st_mtime_ns}"
        if key not in _databases:
            _databases[key] = ImageIndex.open(folder, model)
        return _databases[key]


def checked_k(k: float) -> int:
    return check_number(k, "The number of neighbours", 1, MAX_NEIGHBOURS, integer=True)


def gallery(results, database: ImageIndex) -> tuple[list, str]:
    """Gallery items (image, 'score · file name') and a note on files that have gone missing since the build."""
    items, missing = [], []
    for path, score in results:
        if path.is_file():
            items.append((str(path), f"{score:+.3f} · {path.name}"))
        else:
            missing.append(path.name)
            items.append((missing_image(), f"{score:+.3f} · {path.name} (file missing)"))
    note = f"{len(results)} nearest of {database.count} images in {public(str(database.folder))}."
    if missing:
        note += (f"\n\n⚠️ {len(missing)} file(s) are no longer where the database saw them "
                 f"({', '.join(missing[:5])}); rebuild the database to drop them.")
    return items, note


def count_slider() -> gr.Slider:
    return gr.Slider(1, 48, value=12, step=1, label="Neighbours")


def head_and_count(prefix: str):
    """A per-head neighbour tab's layer and head boxes (`<prefix>-layer`, `<prefix>-head`) and count slider."""
    with gr.Row():
        layer = gr.Number(value=-1, precision=0, label="Layer (-1: last)", elem_id=f"{prefix}-layer")
        head = gr.Number(value=0, precision=0, label="Head", elem_id=f"{prefix}-head")
        count = count_slider()
    return layer, head, count


def neighbour_outputs(prefix: str):
    """A neighbour tab's run button, error status, summary and gallery (`<prefix>-run`, `-error`, `-summary`,
    `-gallery`); captions go under the thumbnails (see `CSS`)."""
    button = gr.Button("Find neighbours", variant="primary", elem_id=f"{prefix}-run")
    status = status_box(prefix)
    summary = gr.Markdown(elem_id=f"{prefix}-summary")
    pictures = gr.Gallery(label="Nearest images", elem_id=f"{prefix}-gallery", columns=6, height="auto",
                          object_fit="contain", interactive=False, elem_classes=["neighbours"], show_label=False)
    return button, status, summary, pictures


# Gradio draws a gallery's captions over the bottom of each thumbnail, hiding what is there: put them below.
CSS = """
.neighbours .thumbnail-item { aspect-ratio: auto !important; display: flex; flex-direction: column; }
.neighbours .thumbnail-item img { aspect-ratio: 1 / 1; min-height: 0; }
.neighbours .caption-label { position: static !important; max-width: 100% !important; border: none !important;
                             border-radius: 0 !important; opacity: 1 !important; text-align: center !important; }
"""
