"""The web explorer: `python app.py` (a laptop) or a Hugging Face Space. A thin skin over `interpret`.

Every handler turns bad input into a readable message (never a stack trace) and the app keeps serving.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

import gradio as gr
from PIL import Image

from interpret.decompose import explain_caption
from interpret.errors import InterpretError, ModelLoadError
from interpret.index import MANIFEST, ImageIndex, build_command, load_head_labels
from interpret.interact import Interaction, interaction_map, parse_box, parse_tokens
from interpret.models import (ClipModel, ModelSpec, catalogue, head_index, layer_index, load_model,
                              spec_from_label)
from interpret.mutual import load_descriptors, mutual_knowledge
from interpret.banks import PROPERTIES, toy_bank
from interpret.images import load_image
from interpret.limits import (ANALYSIS_SLOTS, LOOKUP_SLOTS, MAX_NEIGHBOURS, MAX_PARTS, MAX_STEPS, MAX_TOP_HEADS,
                              MAX_UPLOAD_BYTES, MIN_PARTS, QUEUE_SIZE, RESULT_CACHE_BYTES, UPLOAD_LIFETIME_S,
                              WORKING_SIDE, check_number, check_text, check_texts)
from interpret.render import (concept_venn, deletion_plot, head_grid, map_overlay, missing_image, outline_box,
                              parts_overlay, property_grid)
from interpret.segment import ImageMaps, parse_heads
from interpret.textspan import HeadAtlas, describe_heads
from interpret.toy.evaluate import toy_descriptors
from interpret.toy.examples import build_toy_index, toy_examples
from interpret.toy.train import toy_images

log = logging.getLogger("interpret.app")

ONLINE_DEFAULT = ModelSpec("ViT-B-32", "openai")
OFFLINE_DEFAULTS = (ModelSpec("toy", None), ModelSpec("ViT-B-32", None))
ROOT = Path(__file__).resolve().parent
# Random-init architectures larger than ViT-B-32 cost a visitor's request seconds and up to 1.7 GB each; a hosted
# instance does not offer them unless INTERPRET_MODELS names them.
LARGE_RANDOM = (ModelSpec("ViT-B-16", None), ModelSpec("ViT-L-14", None))


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


class ImageInput(gr.Image):
    """An image upload that hands the uploaded file's path to the handler untouched: the handler reads and
    checks it (so a broken file gets our message, not a decoder's traceback)."""

    is_template = True  # rendered by the front end as a plain gr.Image

    def preprocess(self, payload):
        if payload is None or payload.path is None:
            return super().preprocess(payload) if payload is not None else None
        return str(payload.path)


def friendly_errors(handler):
    """Show a user's mistake as a message and an unexpected failure as a short note; never a traceback, never a
    path of the server."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except InterpretError as error:
            message = str(error) or f"{type(error).__name__}: this input cannot be used."
            raise gr.Error(public(message), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as error:  # a bug: keep serving, log it for us, tell the user briefly
            log.exception("handler %s failed", handler.__name__)
            raise gr.Error(public(f"Something went wrong ({type(error).__name__}: {str(error)[:300]}). The app is "
                                  "still running; please try another input."), print_exception=False) from None

    return wrapper


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


def model_for(label: str) -> ClipModel:
    if not label:
        raise ModelLoadError("Pick a model first.")
    check_text(label, "The model label", 200)
    spec = spec_from_label(label)
    if spec not in offered_models():
        raise ModelLoadError(f"{label} is not offered here. Choose one of: "
                             f"{', '.join(s.label for s in offered_models())}.")
    return load_model(spec.name, spec.pretrained)


def picture_of(image_path: str | None) -> Image.Image:
    """The uploaded image as the app works on it: checked, decoded, and shrunk to `WORKING_SIDE` pixels on its
    longest side when larger (the model sees 224 px; the maps are drawn on this picture)."""
    return load_image(_query_image(image_path), max_side=WORKING_SIDE)


def choose_default_model() -> tuple[str, str]:
    """(label of the model to start with, a note for the page). Tries the real CLIP; offline, the toy model."""
    wanted = os.environ.get("INTERPRET_DEFAULT_MODEL")
    labels = [spec.label for spec in offered_models()]
    if wanted in labels:
        return wanted, ""
    try:
        load_model(ONLINE_DEFAULT.name, ONLINE_DEFAULT.pretrained)
        return ONLINE_DEFAULT.label, ""
    except ModelLoadError as error:
        fallback = next(spec.label for spec in OFFLINE_DEFAULTS if spec.label in labels)
        return fallback, f"⚠️ {error} Starting with **{fallback}** instead."


@friendly_errors
def describe_model(label: str) -> str:
    model = model_for(label)
    g = model.geometry
    return (f"**{model.label}**: {g.layers} layers x {g.heads} heads, width {g.width}, joint space {g.embed_dim}, "
            f"{g.image_size[0]}x{g.image_size[1]} px input, {g.grid[0]}x{g.grid[1]} patches, "
            f"{g.context_length} text tokens.")


@friendly_errors
def run_heads(label: str, image_path: str | None, caption: str, top: float = 10):
    """Heads tab: the layer x head grid of contributions to the image-caption score and the top heads."""
    top = check_number(top, "The number of top heads", 1, MAX_TOP_HEADS, integer=True)
    model = model_for(label)
    model.tokenize(caption or "")  # an unusable caption gets its message before any image work
    report = explain_caption(model, picture_of(image_path), caption)
    grid = head_grid(report.heads.numpy(), f"{model.label}: '{caption.strip()}'", mlps=report.mlps.numpy())
    rows = [[rank, layer, head, round(value, 5), "raises" if value > 0 else "lowers"]
            for rank, (layer, head, value) in enumerate(report.top_heads(top), start=1)]
    summary = (f"Cosine score **{report.cosine:+.4f}** = heads {float(report.heads.sum()):+.4f} "
               f"+ MLPs {float(report.mlps.sum()):+.4f} + rest {report.rest:+.4f}")
    return grid, rows, _with_warnings(summary, report.warnings)


_atlases: dict[str, HeadAtlas] = {}
_atlas_lock = threading.Lock()


def atlas_for(model: ClipModel) -> HeadAtlas:
    """The model's head labels, loaded once; for the toy model they are built on first use (seconds), and
    rebuilt when they were made with other toy weights."""
    with _atlas_lock:
        if model.slug not in _atlases:
            try:
                _atlases[model.slug] = load_head_labels(model)
            except InterpretError:
                if model.name != "toy":
                    raise
                _atlases[model.slug] = describe_heads(model, toy_images(1000), toy_bank(),
                                                      out_path=model.index_dir / "head_labels.json", progress=False)
        return _atlases[model.slug]


@friendly_errors
def run_atlas(label: str, layer: float, head: float):
    """Head atlas tab: one head's TextSpan descriptions and label, and the property map of all heads."""
    model = model_for(label)
    g = model.geometry
    layer, head = _layer_head(model, layer, head)
    atlas = atlas_for(model)
    chosen = atlas.get(layer, head)
    rows = [[rank, text, tag, round(gain, 4)]
            for rank, (text, tag, gain) in enumerate(zip(chosen.descriptions, chosen.tags, chosen.gains), start=1)]
    summary = (f"**Head {layer}.{head}**: property **{chosen.property}** (confidence {chosen.confidence:.0%}); "
               f"its {len(rows)} descriptions explain {chosen.explained:.0%} of its variance over {atlas.images} "
               f"images (bank: {atlas.bank}).")
    picture = property_grid(atlas.property_grid(g.layers, g.heads), f"{model.label}: head property labels",
                            highlight=(layer, head))
    return summary, rows, picture


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


ANY_INDEX = 10 ** 6  # a layer or head number beyond this is not a number the page can mean


def _layer_head(model: ClipModel, layer: float, head: float) -> tuple[int, int]:
    """Layer and head from the page (negative layers count from the end)."""
    g = model.geometry
    layer = check_number(layer, "The layer", -ANY_INDEX, ANY_INDEX, integer=True)  # then the model's own range
    head = check_number(head, "The head", -ANY_INDEX, ANY_INDEX, integer=True)
    return layer_index(layer, g.layers, model.label), head_index(head, g.heads, model.label)


def _checked_k(k: float) -> int:
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
    note = f"{len(results)} nearest of {database.count} images in {database.folder}."
    if missing:
        note += (f"\n\n⚠️ {len(missing)} file(s) are no longer where the database saw them "
                 f"({', '.join(missing[:5])}); rebuild the database to drop them.")
        gr.Warning(f"{len(missing)} neighbour file(s) are missing; rebuild the database.")
    return items, note


def _query_image(image_path: str | None) -> str:
    if image_path is None:
        raise InterpretError("Upload an image first.")
    return image_path


@friendly_errors
def run_property_neighbours(label: str, image_path: str | None, prop: str, k: float = 12):
    """Property neighbours tab: database images like the query in one property only."""
    k = _checked_k(k)
    model = model_for(label)
    picture = picture_of(image_path)
    database = database_for(model)
    atlas = atlas_for(model)
    heads = database.property_heads(prop, atlas)
    results = database.property_neighbours(picture, prop, k=k, atlas=atlas)
    items, note = gallery(results, database)
    return items, f"**{prop}**: the {len(heads)} heads labelled so ({', '.join(f'{l}.{h}' for l, h in heads)}). " + note


@friendly_errors
def run_image_neighbours(label: str, image_path: str | None, layer: float, head: float, k: float = 12):
    """Image neighbours tab: database images that head (layer, head) sees like the query."""
    k = _checked_k(k)
    model = model_for(label)
    layer, head = _layer_head(model, layer, head)
    picture = picture_of(image_path)
    database = database_for(model)
    items, note = gallery(database.image_neighbours(picture, layer, head, k=k), database)
    return items, f"**Head {layer}.{head}**: " + note


@friendly_errors
def run_text_neighbours(label: str, text: str, layer: float, head: float, k: float = 12):
    """Text neighbours tab: database images whose head (layer, head) contribution matches the text."""
    k = _checked_k(k)
    model = model_for(label)
    layer, head = _layer_head(model, layer, head)
    model.tokenize(text or "")  # an unusable text gets its message before any database work
    database = database_for(model)
    items, note = gallery(database.text_neighbours(text, layer, head, k=k), database)
    return items, f"**Head {layer}.{head}**, '{text.strip()}': " + note


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


def _file_key(image_path: str | None) -> tuple:
    path = _query_image(image_path)
    return path, os.path.getmtime(path) if os.path.exists(path) else 0


_image_maps = RecentResults()


def image_maps_for(model: ClipModel, image_path: str | None) -> ImageMaps:
    """The image's spatial decomposition, kept for the last few images."""
    key = (model.slug, *_file_key(image_path))
    return _image_maps.get(key, lambda: ImageMaps(model, picture_of(image_path)))


def _with_warnings(summary: str, warnings: list[str]) -> str:
    """Show each warning as a toast and append it to the summary."""
    for warning in warnings:
        gr.Warning(warning)
        summary += f"\n\n⚠️ {warning}"
    return summary


def _checked_opacity(opacity: float) -> float:
    return check_number(opacity, "The opacity", 0, 1)


def _map_summary(spatial, model: ClipModel, warnings: list[str]) -> str:
    return _with_warnings(f"**{spatial.text}**, {spatial.heads} of {model.label}: {spatial.summary()}. "
                          "Red adds to the score, blue takes away.", warnings)


@friendly_errors
def run_topic(label: str, image_path: str | None, text: str, heads: str = "all", opacity: float = 0.6,
              relative_to: str = ""):
    """Topic segmentation tab: where the chosen heads find the text; `relative_to`: other texts, one a line,
    whose mean map is taken away."""
    opacity = _checked_opacity(opacity)
    model = model_for(label)
    choice = parse_heads(heads)
    others = check_texts([line.strip() for line in (relative_to or "").splitlines() if line.strip()], "Relative to")
    encoded = model.tokenize([text or "", *others])
    maps = image_maps_for(model, image_path)
    spatial = maps.topic(text, **choice, relative_to=others)
    picture = map_overlay(maps.picture, spatial.image, opacity, f"'{spatial.text}' ({spatial.heads})",
                          label="contribution to cosine score" + (" − the others' mean" if others else ""))
    return picture, _map_summary(spatial, model, encoded.warnings())


@friendly_errors
def run_contrastive(label: str, image_path: str | None, text_a: str, text_b: str, heads: str = "all",
                    opacity: float = 0.6):
    """Contrastive segmentation tab: where the chosen heads find text A rather than text B."""
    opacity = _checked_opacity(opacity)
    model = model_for(label)
    choice = parse_heads(heads)
    encoded = model.tokenize([text_a or "", text_b or ""])
    maps = image_maps_for(model, image_path)
    spatial = maps.contrastive(text_a, text_b, **choice)
    picture = map_overlay(maps.picture, spatial.image, opacity, f"'{spatial.text}' ({spatial.heads})",
                          label="contribution to score(A) − score(B)")
    return picture, _map_summary(spatial, model, encoded.warnings())


_interactions = RecentResults()


def interaction_for(model: ClipModel, image_path: str | None, caption: str, image_layer: float, text_layer: float,
                    steps: float, rule: str) -> Interaction:
    """The caption x image interactions, kept for the last few inputs: choosing another span or box is instant."""
    model.tokenize(caption or "")  # an unusable caption gets its message before any image work
    settings = (caption, check_number(image_layer, "The image layer", -ANY_INDEX, ANY_INDEX, integer=True),
                check_number(text_layer, "The text layer", -ANY_INDEX, ANY_INDEX, integer=True),
                check_number(steps, "Steps", 1, MAX_STEPS, integer=True), rule or "midpoint")
    key = (model.slug, *_file_key(image_path), *settings)
    return _interactions.get(key, lambda: interaction_map(model, picture_of(image_path), *settings),
                             valid=lambda result: result.total != 0 or result.explained == 0)


def _token_choices(result: Interaction) -> list[str]:
    return [f"{index}: {token}" for index, token in enumerate(result.tokens)]


@friendly_errors
def run_interaction(label: str, image_path: str | None, caption: str, image_layer: float = -1,
                    text_layer: float = -1, steps: float = 10, rule: str = "midpoint", tokens: str = "",
                    box: str = "", opacity: float = 0.6):
    """Interactions tab: where the chosen caption tokens (a span; default all words) match the image, and how
    much each token matches the chosen box of the image (default: all of it)."""
    opacity = _checked_opacity(opacity)
    model = model_for(label)
    model.tokenize(caption or "")  # the span is checked against the caption's tokens before any image work
    span, region = parse_tokens(tokens, len(model.token_strings(caption))), parse_box(box)
    result = interaction_for(model, image_path, caption, image_layer, text_layer, steps, rule)
    spatial = result.span_to_region(span)
    per_token = result.region_to_span(region)
    picture = map_overlay(result.picture, spatial.image, opacity, f"'{spatial.text}' ({result.layers_name})",
                          label="interaction with the span", box=region)
    bound = float(per_token.abs().max()) or 1.0
    coloured = [(token, round(float(value) / bound, 4)) for token, value in zip(result.tokens, per_token)]
    where = "the whole image" if region is None else f"the box {tuple(round(v) for v in region)}"
    best = int(per_token[1:-1].argmax()) + 1 if len(result.tokens) > 2 else 0
    summary = (f"Cosine **{result.cosine:+.4f}**; {result.layers_name}, {result.steps} steps ({result.rule} rule): "
               f"the interactions sum to {result.total:+.5f} of the {result.explained:+.5f} they explain "
               f"(residual {result.residual:+.1e}, {abs(result.residual) / max(abs(result.explained), 1e-12):.1%})."
               f"\n\n**Span → region**: '{spatial.text}' (red: where it matches). **Region → span**: over {where}, "
               f"'{result.tokens[best]}' matches most ({float(per_token[best]):+.5f}); tokens are coloured by their "
               "interaction, red adds to the score.")
    return picture, coloured, _with_warnings(summary, result.warnings)


@friendly_errors
def interaction_controls(label: str, image_path: str | None, caption: str, image_layer: float = -1,
                         text_layer: float = -1, steps: float = 10, rule: str = "midpoint", box: str = ""):
    """The token checkboxes and the box picker for the current interactions."""
    result = interaction_for(model_for(label), image_path, caption, image_layer, text_layer, steps, rule)
    return gr.update(choices=_token_choices(result)), box_picker(result.picture, parse_box(box))


def tokens_from_checkboxes(chosen: list[str] | None) -> str:
    return ", ".join(item.split(":")[0] for item in (chosen or []))


PICKER_SIDE = 384  # small pictures are shown enlarged (whole multiples) so that corners can be clicked


def picker_scale(picture: Image.Image) -> int:
    return max(1, PICKER_SIDE // max(picture.size))


def box_picker(picture: Image.Image, box=None, corner=None) -> Image.Image:
    """The picture to click corners on (enlarged by `picker_scale`), with the box or first corner drawn."""
    scale = picker_scale(picture)
    enlarged = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return outline_box(enlarged, None if box is None else tuple(v * scale for v in box),
                       None if corner is None else tuple(v * scale for v in corner))


def first_corner(box: str | None) -> tuple[float, float] | None:
    """The corner of a box the picker has started ('x, y'), or None when the box is empty or whole."""
    values = [v for v in (box or "").split(",") if v.strip()]
    return (float(values[0]), float(values[1])) if len(values) == 2 else None


@friendly_errors
def pick_corner(image_path: str | None, box: str, event: gr.SelectData):
    """A click on the picker: the first corner of a new box, or the second corner of the started one (in the
    picture's own pixels)."""
    picture = picture_of(image_path)
    x, y = (float(v) / picker_scale(picture) for v in event.index[:2])
    corner = first_corner(box)
    if corner is not None:
        new_box = (min(corner[0], x), min(corner[1], y), max(corner[0], x), max(corner[1], y))
        return ", ".join(f"{v:.0f}" for v in new_box), box_picker(picture, new_box)
    return f"{x:.0f}, {y:.0f}", box_picker(picture, corner=(x, y))


TOY_CLASSES = "toy world: 24 classes 'a {colour} {shape}'"
OWN_CLASSES = "my descriptor file (JSON)"


@friendly_errors
def run_mutual(label: str, image_path: str | None, preset: str = TOY_CLASSES, descriptor_file: str | None = None,
               template: str = "{}", parts: float = 3, method: str = "prompts"):
    """Mutual knowledge tab: the zero-shot prediction, the image's parts and the concepts the vision and text
    sides share, and the deletion curve of the shared concepts' parts."""
    parts = check_number(parts, "Parts", MIN_PARTS, MAX_PARTS, integer=True)
    model = model_for(label)
    if preset == OWN_CLASSES:
        if not descriptor_file:
            raise InterpretError('Upload a JSON file of classes and their descriptions: {"class": ["description", '
                                 '...], ...}.')
        descriptors = load_descriptors(descriptor_file, template=template or "{}")
    else:
        descriptors = toy_descriptors()
    result = mutual_knowledge(model, picture_of(image_path), descriptors, parts=parts, method=method)
    labels = [", ".join(concepts) for concepts in result.part_concepts]
    overlay = parts_overlay(result.picture, result.parts.numpy(), result.box, labels,
                            title=f"{len(labels)} parts and the descriptors that match them (vision side)")
    venn = concept_venn([d for d in result.visual if d not in result.shared], result.shared,
                        [d for d in result.textual if d not in result.shared],
                        f"predicted: '{result.predicted}'")
    curve = deletion_plot(result.deletion, [f"part {k}" for k in result.deleted_parts],
                          f"deleting the shared concepts' parts (AUC {result.auc:.3f})")
    summary = (f"Predicted **{result.predicted}** (probability {result.probability:.3f} among "
               f"{len(result.classes)} classes). Shared concepts: **{', '.join(result.shared) or 'none'}**; "
               f"mutual information {result.mutual_information:.3f} bits, score **{result.score:.3f}** (0..1); "
               f"deletion AUC **{result.auc:.3f}** (lower: the shared concepts carry the prediction).")
    return summary, overlay, venn, curve


def run_after_pick(*inputs):
    """`run_interaction` once the picker holds a whole box (after its second corner)."""
    if first_corner(inputs[8]) is not None:
        return gr.skip(), gr.skip(), gr.skip()
    return run_interaction(*inputs)


def warm_up(label: str) -> None:
    """Load the default model and, for the toy model, build its head labels and example database, so the
    first request does not wait for them."""
    try:
        model = model_for(label)
        if model.name == "toy":
            atlas_for(model)
            database_for(model)
    except Exception:  # the tabs report the same failure to the user when asked
        log.warning("warm-up of %s failed", label, exc_info=True)


# Every event that runs an analysis shares one pool of slots sized to the cores: many visitors queue instead of
# oversubscribing the CPU (Gradio's own limit is per event, which let 20 analyses run at once on 2 cores).
# Look-ups (a head's stored description, a text search in a database, the model's shapes) take milliseconds and
# have a pool of their own, so that they never wait behind a queue of analyses.
ANALYSIS = {"concurrency_id": "analysis", "concurrency_limit": ANALYSIS_SLOTS}
LOOKUP = {"concurrency_id": "lookup", "concurrency_limit": LOOKUP_SLOTS}

HEADS_LABEL = "Heads: all, a layer (3), a head (3.2) or heads (3.2, 2.5)"


def _map_controls(prefix: str):
    """A segmentation tab's heads box, opacity slider, run button, summary and map (`<prefix>-heads`, ...)."""
    with gr.Row():
        heads = gr.Textbox(value="all", label=HEADS_LABEL, elem_id=f"{prefix}-heads")
        opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Map opacity", elem_id=f"{prefix}-opacity")
    button = gr.Button("Map it", variant="primary", elem_id=f"{prefix}-run")
    summary = gr.Markdown(elem_id=f"{prefix}-summary")
    picture = gr.Image(label="Map (PNG)", type="pil", format="png", elem_id=f"{prefix}-map", interactive=False,
                       buttons=["download", "fullscreen"])
    return heads, opacity, button, summary, picture


def _neighbour_count() -> gr.Slider:
    return gr.Slider(1, 48, value=12, step=1, label="Neighbours")


def _head_and_count(prefix: str):
    """A per-head neighbour tab's layer and head boxes (`<prefix>-layer`, `<prefix>-head`) and count slider."""
    with gr.Row():
        layer = gr.Number(value=-1, precision=0, label="Layer (-1: last)", elem_id=f"{prefix}-layer")
        head = gr.Number(value=0, precision=0, label="Head", elem_id=f"{prefix}-head")
        count = _neighbour_count()
    return layer, head, count


def _neighbour_outputs(prefix: str):
    """A neighbour tab's run button, summary and gallery (`<prefix>-run`, `-summary`, `-gallery`)."""
    button = gr.Button("Find neighbours", variant="primary", elem_id=f"{prefix}-run")
    summary = gr.Markdown(elem_id=f"{prefix}-summary")
    gallery = gr.Gallery(label="Nearest images", elem_id=f"{prefix}-gallery", columns=6, height="auto",
                         object_fit="contain", interactive=False)
    return button, summary, gallery


def build_app(default_label: str | None = None, note: str = "") -> gr.Blocks:
    if default_label is None:
        default_label, note = choose_default_model()
    labels = [spec.label for spec in offered_models()]
    with gr.Blocks(title="CLIP interpret", delete_cache=(UPLOAD_LIFETIME_S, UPLOAD_LIFETIME_S)) as app:
        gr.Markdown("# CLIP interpret\nUpload an image, type a caption, and see which layers and attention heads "
                    "of CLIP carry their match.")
        gr.Markdown(note, elem_id="status")
        with gr.Row():
            with gr.Column(scale=1):
                model_picker = gr.Dropdown(labels, value=default_label, label="Model", elem_id="model")
                model_info = gr.Markdown(describe_model(default_label), elem_id="model-info")
                image = ImageInput(type="filepath", label="Image", elem_id="image")
                caption = gr.Textbox(label="Caption", placeholder="a photo of a dog", elem_id="caption")
                examples = toy_examples()
                if examples:
                    gr.Examples([list(example) for example in examples], [image, caption], label="Toy-world examples (for the toy model)",
                                examples_per_page=len(examples))
            with gr.Column(scale=2):
                with gr.Tab("Heads"):
                    top = gr.Slider(1, 50, value=10, step=1, label="Top heads to list")
                    heads_button = gr.Button("Explain the score", variant="primary", elem_id="heads-run")
                    heads_summary = gr.Markdown(elem_id="heads-summary")
                    heads_grid = gr.Image(label="Contribution of each layer and head", type="pil",
                                          elem_id="heads-grid", interactive=False, show_label=False)
                    heads_table = gr.Dataframe(headers=["rank", "layer", "head", "contribution", "the score"],
                                               label="Top heads (by size, either sign)", elem_id="heads-table",
                                               interactive=False)
                with gr.Tab("Head atlas"):
                    with gr.Row():
                        atlas_layer = gr.Number(value=0, precision=0, label="Layer", elem_id="atlas-layer")
                        atlas_head = gr.Number(value=0, precision=0, label="Head", elem_id="atlas-head")
                    atlas_button = gr.Button("Describe the head", variant="primary", elem_id="atlas-run")
                    atlas_summary = gr.Markdown(elem_id="atlas-summary")
                    atlas_table = gr.Dataframe(headers=["rank", "description", "property", "variance added"],
                                               label="TextSpan descriptions", elem_id="atlas-table",
                                               interactive=False)
                    atlas_grid = gr.Image(label="Property label of every head", type="pil", elem_id="atlas-grid",
                                          interactive=False, show_label=False)
                with gr.Tab("Topic segmentation"):
                    gr.Markdown("Where in the image do the chosen heads find the text? Each patch's contribution "
                                "to the image-text score. A map alone also holds what the image gives *every* "
                                "text; to see only what is particular to yours, list alternatives under "
                                "*Relative to* (their mean map is taken away, as in the TextSpan protocol).")
                    with gr.Row():
                        topic_text = gr.Textbox(label="Text", placeholder="something red", elem_id="topic-text")
                        topic_others = gr.Textbox(label="Relative to (optional, one text a line)", lines=2,
                                                  placeholder="something blue\nsomething green",
                                                  elem_id="topic-relative")
                    topic_heads, topic_opacity, topic_button, topic_summary, topic_picture = _map_controls("topic")
                with gr.Tab("Contrastive segmentation"):
                    gr.Markdown("Where do the chosen heads find text A **rather than** text B? map(A) − map(B).")
                    with gr.Row():
                        contrast_a = gr.Textbox(label="Text A", placeholder="something red", elem_id="contrast-a")
                        contrast_b = gr.Textbox(label="Text B", placeholder="something blue", elem_id="contrast-b")
                    contrast_heads, contrast_opacity, contrast_button, contrast_summary, contrast_picture = \
                        _map_controls("contrast")
                with gr.Tab("Interactions"):
                    gr.Markdown("Which caption tokens match which image patches (second-order interactions, "
                                "Moeller et al.). Tick tokens to see **where** they match; click two corners on "
                                "the picture to see **which tokens** match that box. For the toy model, try image "
                                "layer 2 and text layer 0 (its last text blocks mix the words).")
                    with gr.Row():
                        inter_image_layer = gr.Number(value=-1, precision=0, label="Image layer (-1: last block)",
                                                      elem_id="inter-image-layer")
                        inter_text_layer = gr.Number(value=-1, precision=0, label="Text layer (-1: last block)",
                                                     elem_id="inter-text-layer")
                        inter_steps = gr.Slider(1, 50, value=10, step=1, label="Steps", elem_id="inter-steps")
                        inter_rule = gr.Radio(["midpoint", "right"], value="midpoint", elem_id="inter-rule",
                                              label="Path points (midpoint: more exact; right: the paper's)")
                    inter_button = gr.Button("Compute interactions", variant="primary", elem_id="inter-run")
                    inter_checkboxes = gr.CheckboxGroup([], label="Caption tokens: tick a span (none: all words)",
                                                        elem_id="inter-token-boxes")
                    with gr.Row():
                        inter_tokens = gr.Textbox(label="Span: token numbers (5, 5,6 or 5-7; empty: all words)",
                                                  elem_id="inter-tokens")
                        inter_box = gr.Textbox(label="Box: left, top, right, bottom (empty: whole image)",
                                               elem_id="inter-box")
                        inter_opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Map opacity",
                                                  elem_id="inter-opacity")
                    inter_summary = gr.Markdown(elem_id="inter-summary")
                    inter_span = gr.HighlightedText(label="Tokens coloured by their interaction with the box",
                                                    elem_id="inter-span", show_legend=False)
                    with gr.Row():
                        inter_picker = gr.Image(label="Click two corners of a box", type="pil", interactive=False,
                                                elem_id="inter-picker")
                        inter_map = gr.Image(label="Where the span matches (PNG)", type="pil", format="png",
                                             elem_id="inter-map", interactive=False, buttons=["download", "fullscreen"])
                with gr.Tab("Mutual knowledge"):
                    gr.Markdown("Why this zero-shot class? The concepts that CLIP's **vision side** sees in the "
                                "image's parts and its **text side** associates with the predicted class, and "
                                "what is left of the prediction when the shared concepts' parts are removed "
                                "(Sammani & Deligiannis).")
                    with gr.Row():
                        mutual_preset = gr.Radio([TOY_CLASSES, OWN_CLASSES], value=TOY_CLASSES, label="Classes",
                                                 elem_id="mutual-preset")
                        mutual_file = gr.File(label='Descriptors: JSON {"class": ["description", ...]}',
                                              file_types=[".json"], type="filepath", elem_id="mutual-file")
                    with gr.Row():
                        mutual_template = gr.Textbox(value="{}", label="Class prompt ({} is the class)",
                                                     elem_id="mutual-template")
                        mutual_parts = gr.Slider(2, 8, value=3, step=1, label="Parts", elem_id="mutual-parts")
                        mutual_method = gr.Radio(["prompts", "contributions"], value="prompts",
                                                 label="Part embedding", elem_id="mutual-method")
                    mutual_button = gr.Button("Explain the prediction", variant="primary", elem_id="mutual-run")
                    mutual_summary = gr.Markdown(elem_id="mutual-summary")
                    with gr.Row():
                        mutual_parts_picture = gr.Image(label="Parts", type="pil", interactive=False,
                                                        elem_id="mutual-parts-map")
                        mutual_venn = gr.Image(label="Concepts", type="pil", interactive=False,
                                               elem_id="mutual-venn")
                    mutual_curve = gr.Image(label="Deletion curve", type="pil", interactive=False,
                                            elem_id="mutual-curve")
                with gr.Tab("Property neighbours"):
                    gr.Markdown("Images of the database that look like yours **in one property only**: the summed "
                                "contributions of the heads labelled with it, compared by cosine.")
                    with gr.Row():
                        property_choice = gr.Dropdown(list(PROPERTIES), value="colour", label="Property",
                                                      elem_id="property-choice")
                        property_k = _neighbour_count()
                    property_button, property_summary, property_gallery = _neighbour_outputs("property")
                with gr.Tab("Image neighbours per head"):
                    gr.Markdown("Images of the database that **one head** sees like yours.")
                    image_layer, image_head, image_k = _head_and_count("image-nn")
                    image_button, image_summary, image_gallery = _neighbour_outputs("image-nn")
                with gr.Tab("Text neighbours per head"):
                    gr.Markdown("Images of the database whose contribution from **one head** matches a text.")
                    neighbour_text = gr.Textbox(label="Text", placeholder="something red", elem_id="text-nn-text")
                    text_layer, text_head, text_k = _head_and_count("text-nn")
                    text_button, text_summary, text_gallery = _neighbour_outputs("text-nn")
        model_picker.change(describe_model, model_picker, model_info, **LOOKUP, api_name="model_info")
        atlas_button.click(run_atlas, [model_picker, atlas_layer, atlas_head], [atlas_summary, atlas_table, atlas_grid],
                           **LOOKUP, api_name="head_atlas")
        heads_button.click(run_heads, [model_picker, image, caption, top], [heads_grid, heads_table, heads_summary],
                           **ANALYSIS, api_name="heads")
        topic_inputs = [model_picker, image, topic_text, topic_heads, topic_opacity, topic_others]
        topic_button.click(run_topic, topic_inputs, [topic_picture, topic_summary], **ANALYSIS, api_name="topic_segmentation")
        topic_opacity.release(run_topic, topic_inputs, [topic_picture, topic_summary], **ANALYSIS, api_name=False)
        contrast_inputs = [model_picker, image, contrast_a, contrast_b, contrast_heads, contrast_opacity]
        contrast_button.click(run_contrastive, contrast_inputs, [contrast_picture, contrast_summary],
                              **ANALYSIS, api_name="contrastive_segmentation")
        contrast_opacity.release(run_contrastive, contrast_inputs, [contrast_picture, contrast_summary],
                                 **ANALYSIS, api_name=False)
        inter_settings = [model_picker, image, caption, inter_image_layer, inter_text_layer, inter_steps, inter_rule]
        inter_inputs = inter_settings + [inter_tokens, inter_box, inter_opacity]
        inter_outputs = [inter_map, inter_span, inter_summary]
        inter_button.click(run_interaction, inter_inputs, inter_outputs, **ANALYSIS, api_name="interaction").then(
            interaction_controls, inter_settings + [inter_box], [inter_checkboxes, inter_picker], **ANALYSIS, api_name=False)
        inter_checkboxes.input(tokens_from_checkboxes, inter_checkboxes, inter_tokens, api_name=False).then(
            run_interaction, inter_inputs, inter_outputs, **ANALYSIS, api_name=False)
        inter_picker.select(pick_corner, [image, inter_box], [inter_box, inter_picker], **ANALYSIS, api_name=False).then(
            run_after_pick, inter_inputs, inter_outputs, **ANALYSIS, api_name=False)
        for control in (inter_tokens, inter_box):
            control.submit(run_interaction, inter_inputs, inter_outputs, **ANALYSIS, api_name=False)
        inter_opacity.release(run_interaction, inter_inputs, inter_outputs, **ANALYSIS, api_name=False)
        mutual_button.click(run_mutual, [model_picker, image, mutual_preset, mutual_file, mutual_template, mutual_parts,
                                         mutual_method], [mutual_summary, mutual_parts_picture, mutual_venn, mutual_curve],
                            **ANALYSIS, api_name="mutual_knowledge")
        property_button.click(run_property_neighbours, [model_picker, image, property_choice, property_k],
                              [property_gallery, property_summary], **ANALYSIS, api_name="property_neighbours")
        image_button.click(run_image_neighbours, [model_picker, image, image_layer, image_head, image_k],
                           [image_gallery, image_summary], **ANALYSIS, api_name="image_neighbours")
        text_button.click(run_text_neighbours, [model_picker, neighbour_text, text_layer, text_head, text_k],
                          [text_gallery, text_summary], **LOOKUP, api_name="text_neighbours")
        caption.submit(run_heads, [model_picker, image, caption, top], [heads_grid, heads_table, heads_summary],
                       **ANALYSIS, api_name=False)
    app.default_label = default_label
    return app


def serve(explorer: gr.Blocks, **launch_options) -> None:
    """Launch with the limits of `interpret.limits`: a bounded queue ("busy, try again" beyond it), every analysis
    in one pool of `ANALYSIS_SLOTS` (set on each event), and a cap on uploads."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // ANALYSIS_SLOTS))  # the slots share the cores
    explorer.queue(max_size=QUEUE_SIZE).launch(max_file_size=MAX_UPLOAD_BYTES, **launch_options)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    explorer = build_app()
    threading.Thread(target=warm_up, args=(explorer.default_label,), daemon=True).start()
    serve(explorer)
