"""What every tab of the page shares: the models a visitor may pick, error messages (in the panel for the page,
raised for API clients), the uploaded picture, caches of recent results, and the pools of slots the events run in.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import os
import re
import threading
import unicodedata
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterator

import gradio as gr
import numpy as np
import torch
from PIL import Image

from ..errors import InterpretError, ModelLoadError
from ..images import load_image
from ..limits import (ANALYSIS_SLOTS, LOOKUP_SLOTS, MAX_TEXT_WORK, QUICK_SLOTS, RESULT_CACHE_BYTES, WORKING_SIDE,
                      check_number, check_text)
from ..models import ClipModel, ModelSpec, catalogue, head_index, layer_index, load_model, spec_from_label

log = logging.getLogger("interpret.app")

ROOT = Path(__file__).resolve().parent.parent.parent
ONLINE_DEFAULT = ModelSpec("ViT-B-32", "openai")
OFFLINE_DEFAULTS = (ModelSpec("toy", None), ModelSpec("ViT-B-32", None))
# Random-init architectures larger than ViT-B-32 cost a visitor's request seconds and up to 1.7 GB each; a hosted
# instance does not offer them unless INTERPRET_MODELS names them.
LARGE_RANDOM = (ModelSpec("ViT-B-16", None), ModelSpec("ViT-L-14", None), ModelSpec("EVA02-B-16", None),
                ModelSpec("PE-Core-B-16", None))

# Every event that runs an analysis shares one pool of slots sized to the cores: many visitors queue instead of
# oversubscribing the CPU (Gradio's own limit is per event, which let 20 analyses run at once on 2 cores).
# Look-ups (a head's stored description, a text search in a database, the model's shapes) take milliseconds and
# have a pool of their own, so that they never wait behind a queue of analyses.
ANALYSIS = {"concurrency_id": "analysis", "concurrency_limit": ANALYSIS_SLOTS}
# Analyses that take a tenth of a second or so (a grid, a map, a search, interactions at the last blocks) have a
# pool of their own: under load they never queue behind a slow one (mutual knowledge, a comparison of every map).
QUICK = {"concurrency_id": "quick", "concurrency_limit": QUICK_SLOTS}
LOOKUP = {"concurrency_id": "lookup", "concurrency_limit": LOOKUP_SLOTS}
JOB_EVENT = {"show_progress": "hidden"}  # an event that follows a long job (`follow_job`): its status line says how far


# --- models and where they run ------------------------------------------------------------------------------------

def zero_gpu() -> bool:
    """Whether this runs on a ZeroGPU Space (a GPU is attached to each decorated call, not to the process)."""
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def analysis_device() -> str:
    """Where the app runs its models: INTERPRET_DEVICE when set; else CUDA when there is a GPU (or ZeroGPU lends
    one per request); else the CPU. Nothing needs a GPU."""
    if os.environ.get("INTERPRET_DEVICE"):
        return os.environ["INTERPRET_DEVICE"]
    return "cuda" if zero_gpu() or torch.cuda.is_available() else "cpu"


def on_gpu(handler: Callable) -> Callable:
    """`handler` run with a GPU attached under ZeroGPU (`spaces.GPU`, when the `spaces` package is there);
    elsewhere `handler` itself."""
    if not zero_gpu():
        return handler
    try:
        import spaces
    except ImportError:
        return handler
    return spaces.GPU(handler)


def hosted() -> bool:
    """Whether this runs as a public service (a Hugging Face Space sets SPACE_ID; INTERPRET_HOSTED=1 says so too)."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("INTERPRET_HOSTED", "") == "1"


def offered_models() -> list[ModelSpec]:
    """The models a visitor may pick: INTERPRET_MODELS (labels, comma-separated) when set; else the catalogue,
    less the large random-init ones on a hosted instance."""
    everything = catalogue()
    wanted = [label.strip() for label in os.environ.get("INTERPRET_MODELS", "").split(",") if label.strip()]
    if wanted:
        return [spec for spec in everything if spec.label in wanted]
    return [spec for spec in everything if not (hosted() and spec in LARGE_RANDOM)]


def model_for(label: str) -> ClipModel:
    """The loaded model of a picker label, if this instance offers it."""
    if not label:
        raise ModelLoadError("Pick a model first.")
    check_text(label, "The model label", 200)
    spec = spec_from_label(label)
    if spec not in offered_models():
        raise ModelLoadError(f"{label} is not offered here. Choose one of: "
                             f"{', '.join(s.label for s in offered_models())}.")
    return load_model(spec.name, spec.pretrained, analysis_device())


def choose_default_model() -> tuple[str, str]:
    """(label of the model to start with, a note for the page). Tries the real CLIP; offline, the toy model."""
    wanted = os.environ.get("INTERPRET_DEFAULT_MODEL")
    labels = [spec.label for spec in offered_models()]
    if wanted in labels:
        return wanted, ""
    try:
        load_model(ONLINE_DEFAULT.name, ONLINE_DEFAULT.pretrained, analysis_device())
        return ONLINE_DEFAULT.label, ""
    except ModelLoadError as error:
        fallback = next(spec.label for spec in OFFLINE_DEFAULTS if spec.label in labels)
        return fallback, f"⚠️ {error} Starting with **{fallback}** instead."


def model_summary(model: ClipModel) -> str:
    g = model.geometry
    tower = model.text_tower()
    blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
    text_layers = (f"; the text tower {len(blocks)} layers (a layer -1 is either tower's last block, -2 the one "
                   "before it)") if blocks is not None else ""
    return (f"**{model.label}**: {g.layers} layers x {g.heads} heads, width {g.width}, joint space {g.embed_dim}, "
            f"{g.image_size[0]}x{g.image_size[1]} px input, {g.grid[0]}x{g.grid[1]} patches, "
            f"{g.context_length} text tokens{text_layers}.")


ANY_INDEX = 10 ** 6  # a layer or head number beyond this is not a number the page can mean


def page_index(value: float, name: str) -> int:
    """A layer or head number from the page: a whole number within +-`ANY_INDEX` (then the model's own range is
    checked by whoever uses it)."""
    return check_number(value, name, -ANY_INDEX, ANY_INDEX, integer=True)


def layer_and_head(model: ClipModel, layer: float, head: float) -> tuple[int, int]:
    """Layer and head from the page (negative layers count from the end), checked against the model."""
    g = model.geometry
    return (layer_index(page_index(layer, "The layer"), g.layers, model.label),
            head_index(page_index(head, "The head"), g.heads, model.label))


# --- errors ------------------------------------------------------------------------------------------------------

def message_for(error: Exception, where: str) -> str:
    """What a visitor is told of `error` (raised in `where`): a user's mistake as its message, an unexpected
    failure as a short note (logged for us, with its traceback: call this inside the `except`); never a
    traceback, never a path of the server."""
    if isinstance(error, gr.Error):
        return error.message
    if isinstance(error, InterpretError):
        return public(str(error) or f"{type(error).__name__}: this input cannot be used.")
    log.exception("%s failed", where)
    return public(f"Something went wrong ({type(error).__name__}: {str(error)[:300]}). The app is still running; "
                  "please try another input.")


def friendly_errors(handler):
    """`handler` with every error raised as `gr.Error` carrying `message_for` it (API clients get it as their
    error; the page shows it in the panel)."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            raise gr.Error(message_for(error, handler.__name__), print_exception=False) from None

    return wrapper


def in_panel(handler: Callable, outputs: int) -> Callable:
    """`handler` (raising `gr.Error`) for the page: its outputs and then a status text for its panel. On an
    error the outputs are cleared (no stale answer stays under the message) and the status says what went wrong
    until the next run."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            result = handler(*args, **kwargs)
        except gr.Error as error:
            return (*[None] * outputs, error_text(error.message))
        return (*(result if isinstance(result, tuple) else (result,)), "")

    return wrapper


def check_text_work(model: ClipModel, texts: list[str], what: str = "These {count} texts", instead: str = "") -> None:
    """Refuse, before the text tower runs, texts whose embeddings would take more than `MAX_TEXT_WORK` here
    (`what` names them, with `{count}` for how many; `instead`: what to do)."""
    work = model.text_work(model.tokenize(texts))
    if work > MAX_TEXT_WORK:
        raise InterpretError(f"{what.format(count=f'{len(texts):,}')} would take {work / 1e9:,.0f} billion "
                             f"multiply-adds of {model.label}'s text tower; a request may take "
                             f"{MAX_TEXT_WORK / 1e9:,.0f} billion here. {instead or 'Send fewer or shorter texts.'}")


def follow_job(job) -> Iterator[str]:
    """A long job's state as a status line, twice a second (its place in line while it waits; how far it is, the
    stage, the units done and the time against the estimate while it runs), then its outcome (a failure or a stop
    marked as an error). Closing this generator (Gradio does when the visitor leaves) stops following the job: it
    stops when nobody follows it. Its events show no progress overlay of Gradio's (`JOB_EVENT`): it was drawn
    over this line."""
    from ..jobs import HEAVY

    for state in HEAVY.follow(job):
        if state.phase == "done":
            yield state.outcome
        elif state.finished:
            yield error_text(state.outcome)
        else:
            yield f"**{job.title}**: {state.line()}"


def error_text(message: str) -> str:
    """A panel's error: the message (which may quote what the visitor sent) shown as it is, in bold."""
    return f"⚠️ **{escaped(message, limit=2_000)}**"


# What Markdown (CommonMark with GitHub's extensions and Gradio's $$ maths, as the page renders it) can read as
# markup in a line of text: these characters anywhere; a line's first character when it opens a block (a heading,
# a list, a quote, a rule); a web address (GitHub's autolinks).
_MARKUP_ANYWHERE = re.compile(r"([\\`*_\[\]<>!&~|$])")
_BLOCK_START = re.compile(r"( ?)(?:([#+\-=>])|(\d+)([.)]))")
_AUTOLINK = re.compile(r"(?i)(?<=www)\.|:(?=//)")
_LINE_BREAKS = {"Cc", "Zl", "Zp"}  # Unicode categories of control characters and line or paragraph separators


def escaped(text, limit: int = 300) -> str:
    """`text` (anything a visitor sent, or a name made from it) as Markdown that shows exactly that text: line
    breaks and control characters become spaces, leading spaces one space, and each character Markdown could read as markup (no HTML, link,
    emphasis, maths, heading, list or table can come out of it) is backslash-escaped, and nothing else (API and MCP
    clients read these texts too: "2,000 images; the limit is 2,000." stays as it is); a longer text is cut at
    `limit` characters (between characters) with an ellipsis."""
    text = "".join(" " if unicodedata.category(char) in _LINE_BREAKS else char for char in str(text))
    if len(text) > limit:
        text = text[:limit] + "…"
    text = _AUTOLINK.sub(lambda match: "\\" + match.group(0), _MARKUP_ANYWHERE.sub(r"\\\1", text))
    text = re.sub(r"^\s+", " ", text)  # one space for leading ones (Markdown shows one; four open a code block)
    start = _BLOCK_START.match(text)
    if start is None:
        return text
    space, mark, number, stop = start.groups()
    return space + (f"\\{mark}" if mark else f"{number}\\{stop}") + text[start.end():]


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"(),;:]+/)*[^\s'\"(),;:]*")


def public(message: str) -> str:
    """`message` without the server's file system: paths inside the app's folder become relative to it (the
    commands in messages still work from there), any other absolute path becomes its file name."""
    def shorten(match: re.Match) -> str:
        path = Path(match.group(0))
        try:
            return path.relative_to(ROOT).as_posix() or "."
        except ValueError:
            return path.name or "/"

    return _ABSOLUTE_PATH.sub(shorten, message)


def with_warnings(summary: str, warnings: list[str]) -> str:
    """The summary with each warning appended."""
    for warning in warnings:
        summary += f"\n\n⚠️ {escaped(warning, limit=1_000)}"
    return summary


CSS = """
.panel-error, .panel-error * { color: #b42318 !important; }
#image img { height: 220px; width: 100%; object-fit: contain; image-rendering: pixelated; }
"""  # the image: a small upload (a 64 px toy scene) is shown enlarged, whole, with sharp pixels


# Gradio's default typeface, with its complete bold face for every heavier weight: the semi-bold file it ships
# holds a few glyphs only, so bold text came out in two typefaces (Source Sans and the system's DejaVu Sans Bold).
THEME = gr.themes.Default(font=[gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)), "ui-sans-serif",
                                "system-ui", "sans-serif"])


# Enter in a slider's number box commits what was typed: the box sends its value when it loses focus (its
# 'release'), so a typed opacity followed by Enter redrew nothing. Run by the page once it has loaded.
JS = """() => document.addEventListener("keydown", (event) => {
    const box = event.target;
    if (event.key === "Enter" && box instanceof HTMLInputElement && box.type === "number"
        && (box.getAttribute("aria-label") || "").startsWith("number input for")) box.blur();
})"""


def status_box(prefix: str) -> gr.Markdown:
    """Where a panel's errors are shown (`<prefix>-error`)."""
    return gr.Markdown(elem_id=f"{prefix}-error", elem_classes=["panel-error"])


def connect(trigger, handler: Callable, inputs: list, outputs: list, status: gr.Markdown, api_name: str | None = None,
            pool: dict = ANALYSIS):
    """Run `handler` when `trigger` (an event listener such as `button.click`) fires: on the page with its
    errors in `status`; and, with `api_name`, as a named endpoint for API clients (who get errors raised).
    Returns the page's event (for `.then`). Analyses get a GPU under ZeroGPU."""
    if pool is not LOOKUP:
        handler = returning_memory(on_gpu(handler))
    event = trigger(in_panel(handler, len(outputs)), inputs, [*outputs, status], api_visibility="private", **pool)
    if api_name:
        from .tools import described  # the endpoint's description (API page, MCP tool)

        gr.Button(visible=False, elem_classes=["api-only"]).click(described(handler, api_name), inputs, outputs,
                                                                  api_name=api_name, **pool)
    return event


def returning_memory(handler: Callable) -> Callable:
    """`handler`, after which the memory its analysis freed goes back to the system (glibc keeps freed blocks
    of a large computation in its arenas otherwise: a server's memory would only grow)."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        finally:
            release_memory()

    return wrapper


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        return None


def release_memory() -> None:
    """Hand the heap's free memory back to the system, where the C library can (glibc's malloc_trim)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# --- the picture ---------------------------------------------------------------------------------------------------

class ImageInput(gr.Image):
    """An image upload that hands the uploaded file's path to the handler untouched: the handler reads and
    checks it (so a broken file gets our message, not a decoder's traceback)."""

    is_template = True  # rendered by the front end as a plain gr.Image

    def preprocess(self, payload):
        if payload is None or payload.path is None:
            return super().preprocess(payload) if payload is not None else None
        return str(payload.path)


def query_image(image_path: str | None) -> str:
    if image_path is None:
        raise InterpretError("Upload an image first.")
    return image_path


def picture_of(image_path: str | None) -> Image.Image:
    """The uploaded image as the app works on it: checked, decoded, and shrunk to `WORKING_SIDE` pixels on its
    longest side when larger (the model sees 224 px; the maps are drawn on this picture)."""
    return load_image(query_image(image_path), max_side=WORKING_SIDE)


def file_key(image_path: str | None) -> tuple:
    path = query_image(image_path)
    return path, os.path.getmtime(path) if os.path.exists(path) else 0


# --- caches ------------------------------------------------------------------------------------------------------

class RecentResults:
    """Recent results of an expensive computation, by key (thread-safe), kept within `max_bytes` (least
    recently used go first): changing only a display choice (text, heads, opacity, span, box) does not recompute
    them. Only results that `valid` accepts are kept; a failure is never kept."""

    def __init__(self, max_bytes: int = RESULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._results: OrderedDict = OrderedDict()  # key -> (result, bytes)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, key) -> bool:
        return key in self._results

    def get(self, key, make, valid=lambda result: True):
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key][0]
        result = make()
        size = result_bytes(result)
        if not valid(result) or size > self.max_bytes:
            return result
        with self._lock:
            if key in self._results:
                self.bytes -= self._results.pop(key)[1]
            self._results[key] = (result, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                self.bytes -= self._results.popitem(last=False)[1][1]
        return result


def result_bytes(value, seen: set | None = None) -> int:
    """The memory a result holds in tensors, arrays and pictures (models it refers to are not its own)."""
    seen = set() if seen is None else seen
    if id(value) in seen or isinstance(value, (ClipModel, torch.nn.Module)):
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, Image.Image):
        return value.width * value.height * len(value.getbands())
    if isinstance(value, dict):
        return sum(result_bytes(item, seen) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(result_bytes(item, seen) for item in value)
    if dataclasses.is_dataclass(value) or hasattr(value, "__dict__"):
        return sum(result_bytes(item, seen) for item in vars(value).values())
    return 0


# --- what every tab is given ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Shared:
    """The page's left column, which every tab reads (the model picker, the image and the caption), and the page
    itself (for its load event)."""

    page: gr.Blocks
    model: gr.Dropdown
    image: ImageInput
    caption: gr.Textbox
    linked: dict = dataclasses.field(default_factory=dict)  # tab title -> {field: input} a link holds (`links`)
    tab_of: dict = dataclasses.field(default_factory=dict)  # tab title -> its gr.Tab
    after_build: list = dataclasses.field(default_factory=list)  # (handler, inputs, outputs) run after a build
    # (table, handler): a click on the table's row opens a head in the Head atlas; handler(rows, event) -> (layer,
    # head) (`links.attach_head_links`)
    head_links: list = dataclasses.field(default_factory=list)

    def link(self, title: str, **inputs) -> None:
        """Let a link hold these inputs of tab `title` (field name in the link -> input): every input of its view."""
        self.linked.setdefault(title, {}).update(inputs)
