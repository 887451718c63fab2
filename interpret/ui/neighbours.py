"""What the three database tabs share: the model's image database, the gallery of neighbours, and their
controls."""
from __future__ import annotations

import threading
from pathlib import Path, PurePosixPath

import gradio as gr


from ..archives import original_names
from ..folders import THUMBNAIL_SIDE, model_folder, thumbnail_of
from ..errors import ImageError, InterpretError
from ..images import load_image
from ..index import MANIFEST, ImageIndex, build_command
from ..limits import MAX_NEIGHBOURS, check_number
from ..models import ClipModel, is_toy
from ..render import missing_image
from ..toy.examples import build_toy_index
from ..integrity import LoadedFiles
from .common import escaped, public, status_box
from .database import visitor_database

OPEN_DATABASES = 8  # databases kept open at once (visitors' own ones come and go; least recently used closes)
_databases = LoadedFiles(OPEN_DATABASES)  # by their manifest
_toy_checked: set[str] = set()
_database_lock = threading.Lock()


def database_folder(model: ClipModel, session: str | None = None) -> Path:
    """The visitor's own database for the model when this session built one, else the model's (its index
    folder or its bundle, see `folders.model_folder`)."""
    return visitor_database(session, model.slug) or model_folder(model)


def database_for(model: ClipModel, session: str | None = None) -> ImageIndex:
    """The database `database_folder` names, opened once and reopened after a rebuild. For the toy model a small
    toy-world database is built on first use (and rebuilt if it was made with other toy weights)."""
    with _database_lock:
        if is_toy(model.name) and model.slug not in _toy_checked:
            build_toy_index(model)  # incremental: nothing to do when it is up to date
            _toy_checked.add(model.slug)
        folder = database_folder(model, session)
        if not (folder / MANIFEST).is_file():
            raise InterpretError(f"No image database for {model.label} here yet. Build one from your images in "
                                 f"the Build a database tab, or once with:  {build_command(model)}  (or python -m "
                                 "interpret bundle ..., and point INTERPRET_BUNDLES at the bundles).")
        return _databases.get(folder / MANIFEST, lambda: ImageIndex.open(folder, model))


def checked_k(k: float) -> int:
    return check_number(k, "The number of neighbours", 1, MAX_NEIGHBOURS, integer=True)


NAME_CHARS = 36  # of an image's name in a gallery caption (cut in the middle beyond)


def middle_cut(name: str, width: int = NAME_CHARS) -> str:
    """`name` cut in the middle to `width` characters: its start and its end (where names of one collection
    differ: 'scene-0012.png') both stay."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def gallery_name(names: dict[str, str], path: str) -> str:
    """A database image's name in a gallery caption: its name in the visitor's zip file (`names`, from
    `original_names`) where it came from one, else its own path; cut in the middle."""
    return middle_cut(names.get(PurePosixPath(path).name, path))


def database_title(model: ClipModel, session: str | None, database: ImageIndex) -> str:
    """What a summary calls `database` (from `database_for`): the visitor's own, or the model's."""
    own = visitor_database(session, model.slug)
    if own is not None and Path(database.folder).resolve() == own.resolve():
        return "your own database (built in this session)"
    return f"{escaped(model.label)}'s database ({escaped(public(str(database.folder)))})"


def gallery(results, database: ImageIndex, title: str) -> tuple[list, str]:
    """Gallery items (picture, 'score · file name') and a note naming the database (`title`) and the files that
    have gone missing since the build. A picture is the image itself, or its bundle's thumbnail where the
    collection is not on this machine, at most `THUMBNAIL_SIDE` pixels (handed to the page as pictures: a bundle
    may live where Gradio serves no files). A visitor's images go by their names in the zip file."""
    items, missing = [], []
    names = original_names(database.root)
    for path, score in results:
        thumbnail = thumbnail_of(database.folder, path.relative_to(database.root).as_posix())
        picture = _readable(path) or _readable(thumbnail)
        name = names.get(path.name, path.name)
        if picture is None:
            missing.append(name)
        items.append((picture or missing_image(), f"{score:+.3f} · {middle_cut(name)}" + ("" if picture else
                                                                                            " (file missing)")))
    note = f"{len(results)} nearest of {database.count} images in {title}."
    if missing:
        note += (f"\n\n⚠️ {len(missing)} file(s) are no longer where the database saw them "
                 f"({escaped(', '.join(missing[:5]))}); rebuild the database to drop them.")
    return items, note


def _readable(path: Path):
    """The picture at `path`, shrunk to a thumbnail, or None when there is none to read."""
    try:
        return load_image(path, max_side=THUMBNAIL_SIDE) if path.is_file() else None
    except ImageError:
        return None


def count_slider() -> gr.Slider:
    return gr.Slider(1, MAX_NEIGHBOURS, value=12, step=1, label="Neighbours")


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
.captioned .thumbnail-item { aspect-ratio: auto !important; display: flex; flex-direction: column; }
.captioned .thumbnail-item img { aspect-ratio: 2 / 1; min-height: 0; }
.captioned .caption-label { position: static !important; max-width: 100% !important; border: none !important;
                            border-radius: 0 !important; opacity: 1 !important; text-align: center !important;
                            white-space: normal !important; overflow-wrap: anywhere; }
.neighbours .thumbnail-item { aspect-ratio: auto !important; display: flex; flex-direction: column; }
.neighbours .thumbnail-item img { aspect-ratio: 1 / 1; min-height: 0; }
.neighbours .caption-label { position: static !important; max-width: 100% !important; border: none !important;
                             border-radius: 0 !important; opacity: 1 !important; text-align: center !important;
                             white-space: normal !important; overflow-wrap: anywhere; }
"""
