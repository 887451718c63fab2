"""Every size, count and length a user controls, in one place, and the checks that enforce them.

Each check runs before any work is done and raises `InterpretError` with a message that names the limit and the
value it got. The library, the CLI and the app all use these; change a value here and nowhere else. The README's
"Limits" table is `limits_table()` (a test keeps it true; `python -m interpret limits` prints it).
"""
from __future__ import annotations

import math
import os
import unicodedata
from pathlib import Path
from typing import Sequence

from .errors import InterpretError

MB = 2 ** 20

# --- images: checked on the file's size, then on the header, before any pixel is decoded
MAX_IMAGE_BYTES = 50 * MB  # one image file
MAX_PIXELS = 40_000_000  # width x height
MAX_SIDE = 12_000  # pixels, either side
MAX_ASPECT = 20  # longest side / shortest side
MIN_SIDE = 8  # pixels; smaller carries no structure a ViT could see
WORKING_SIDE = 1024  # the app analyses and draws a copy of a larger picture with this longest side

# --- texts
MAX_TEXT_CHARS = 1_000  # one caption or text (the model reads at most its context, 77 tokens for CLIP)
MAX_TEXTS = 64  # texts in one field ("relative to": one a line)
MAX_SPEC_CHARS = 200  # a token span, a box or a heads list as typed

# --- analyses
MAX_STEPS = 200  # interaction path points
# multiply-adds one interaction map may take in the app (`interact.interaction_work`: 1-4 s on 2 cores, measured in
# benchmarks/interaction_work.py), beyond which its steps are lowered, or it is refused when 1 step is too many (the
# library and the CLI have no such limit)
MAX_INTERACTION_WORK = float(os.environ.get("INTERPRET_MAX_INTERACTION_GMACS", 200)) * 1e9  # (the toy's 200 steps
# at layers 0/0 lowered to 300 billion took 5.7 s through the door, with the app's one thread a slot: 46 GMAC/s)
# multiply-adds of the text tower one request may take in the app (a descriptor file's prompts and descriptors;
# `ClipModel.text_work`), beyond which it is refused with what it would take (the library and the CLI have no limit)
MAX_TEXT_WORK = float(os.environ.get("INTERPRET_MAX_TEXT_GMACS", 100)) * 1e9
COMPARED_METHODS = 10  # explanation methods on the Compare tab (each once: a request's cost is bounded by design)
COMPARE_CURVE_STEPS = 8  # deletion / insertion points a map there (9 images each way), fewer to fit the work below
MAX_COMPARE_WORK = float(os.environ.get("INTERPRET_MAX_COMPARE_GMACS", 300)) * 1e9  # one comparison's multiply-adds
MAX_NEIGHBOURS = 100  # k of one search
MAX_TOP_HEADS = 100  # heads listed
MAX_TOP_NEURONS = 30  # neurons listed for an image and caption (each a map in the figure)
NEURON_IMAGES_SHOWN = 12  # of a neuron's top database images, shown with its activation (a fixed count)
MAX_TOP_FEATURES = 30  # SAE features listed for an image (each a map, and a forward pass when a caption is given)
FEATURE_IMAGES_SHOWN = 12  # of a feature's top database images, shown with its activation (a fixed count)
MAX_FEATURE_STRENGTH = 50.0  # the activation a feature may be added with
MAX_CIRCUIT_FEATURES = 1000  # features an attribution graph keeps (each a backward pass: 13 s at 1,000 on ViT-B-32)
MIN_PARTS, MAX_PARTS = 1, 16  # mutual knowledge: visual concepts of an image

# --- descriptor files (mutual knowledge) and prompt templates
MAX_DESCRIPTOR_BYTES = 1 * MB
MAX_CLASSES = 1_000
MAX_DESCRIPTORS = 50  # per class
MAX_POOL = 5_000  # distinct descriptors over all classes
MAX_DESCRIPTOR_CHARS = 200  # one descriptor or class name
MAX_TEMPLATE_CHARS = 200

# --- databases built in the app from a visitor's zip (settable by the operator)
MAX_BUILD_IMAGES = int(os.environ.get("INTERPRET_MAX_BUILD_IMAGES", 2_000))
MAX_ARCHIVE_BYTES = int(os.environ.get("INTERPRET_MAX_ARCHIVE_MB", 500)) * MB  # all images, uncompressed
MAX_COMPRESSION_RATIO = 100  # uncompressed / compressed, per file (images barely compress: a bomb does)
MAX_MEMBER_NAME_CHARS, MAX_MEMBER_DEPTH = 1_024, 32  # one zip member's name: characters, and folders deep
BUILT_LIFETIME_S = 24 * 3_600  # visitors' databases older than this are deleted
MAX_JOBS_WAITING = 8  # long jobs (builds, trainings) waiting in line behind the one that runs; beyond, "try later"
JOB_STOP_S = 2.0  # a long job stops this soon after nobody waits for it (its units are shorter)

# --- the server (app.py)
MAX_UPLOAD_BYTES = 50 * MB  # any upload; Gradio refuses larger ones before they are stored
UPLOAD_LIFETIME_S = 3_600  # uploads and outputs older than this are deleted (checked as often)
MAX_WAITING_PER_POOL = 64  # requests waiting for one pool of slots (analyses, look-ups, ...); beyond, "busy"
MAX_WAITING_PER_VISITOR = 8  # requests of one visitor (session) waiting; beyond, "wait for your answers"
MAX_MCP_SESSIONS = 256  # MCP clients connected at once (each a visitor of its own); beyond, HTTP 503 until one ends
MCP_SESSION_IDLE_S = 1_800  # an MCP session with no request for this long is closed (the client then starts anew)
# Slow analyses at once (mutual knowledge, comparisons, model scores): as many as the cores, since users who wait on
# one of them would otherwise queue in a single slot while the quick pool runs beside it.
ANALYSIS_SLOTS = int(os.environ.get("INTERPRET_ANALYSIS_SLOTS", 0)) or max(1, os.cpu_count() or 1)
# Quick analyses at once (a figure of ~0.1-0.3 s: heads, maps, neighbours, interactions), beside the slow ones, as
# many (benchmarks/load_test.py: with fewer, one kind queues behind the other under 8 users)
QUICK_SLOTS = int(os.environ.get("INTERPRET_QUICK_SLOTS", 0)) or max(1, os.cpu_count() or 1)
LOOKUP_SLOTS = 2  # look-ups at once (a stored head description, a text search, a model's shapes): milliseconds each
RESULT_CACHE_BYTES = int(os.environ.get("INTERPRET_RESULT_CACHE_MB", 256)) * MB  # per cache of recent results
MODELS_KEPT = 2  # models kept loaded at once (the least recently used goes)


def limits_table() -> str:
    """The README's table of limits (markdown)."""
    rows = [
        ("image file", f"{MAX_IMAGE_BYTES // MB} MB"),
        ("image size", f"{MAX_PIXELS / 1e6:.0f} megapixels, {MAX_SIDE:,} px a side, aspect {MAX_ASPECT}:1, "
                       f"at least {MIN_SIDE} px a side"),
        ("picture the app works on", f"longest side {WORKING_SIDE} px (larger uploads are shrunk first)"),
        ("caption or text", f"{MAX_TEXT_CHARS:,} characters"),
        ("texts in one field", f"{MAX_TEXTS}"),
        ("token span, box or heads list", f"{MAX_SPEC_CHARS} characters; token numbers within the caption"),
        ("interaction steps", f"1 to {MAX_STEPS}"),
        ("work of one interaction map in the app",
         f"{MAX_INTERACTION_WORK / 1e9:.0f} billion multiply-adds (INTERPRET_MAX_INTERACTION_GMACS): fewer steps "
         "beyond, or refused"),
        ("compared explanation maps", f"the {COMPARED_METHODS} methods at most, {COMPARE_CURVE_STEPS} deletion and "
                                      f"insertion steps each, {MAX_COMPARE_WORK / 1e9:,.0f} billion multiply-adds in "
                                      "all (INTERPRET_MAX_COMPARE_GMACS): fewer steps beyond, or no curves"),
        ("text tower work of one request in the app", f"{MAX_TEXT_WORK / 1e9:.0f} billion multiply-adds "
                                                      "(INTERPRET_MAX_TEXT_GMACS): a descriptor file's prompts and "
                                                      "descriptors beyond it are refused, with what they would take"),
        ("neighbours (k)", f"1 to {MAX_NEIGHBOURS}"),
        ("top heads listed", f"1 to {MAX_TOP_HEADS}"),
        ("neurons listed (Neurons tab)", f"1 to {MAX_TOP_NEURONS}; a neuron's top images shown: {NEURON_IMAGES_SHOWN}"),
        ("features listed (Features tab)", f"1 to {MAX_TOP_FEATURES}; a feature's top images shown: "
                                           f"{FEATURE_IMAGES_SHOWN}; the activation it is added with: 0 to "
                                           f"{MAX_FEATURE_STRENGTH:g}; SAEs and transcoders trained in the Features tab: "
                                           "the toy models only (the Build tab trains them for any model, on your zip)"),
        ("circuits (attribution graphs)", f"1 to {MAX_CIRCUIT_FEATURES:,} features kept; node and edge thresholds "
                                          "0 to 1"),
        ("mutual-knowledge visual concepts", f"{MIN_PARTS} to {MAX_PARTS}"),
        ("descriptor file", f"{MAX_DESCRIPTOR_BYTES // MB} MB, {MAX_CLASSES:,} classes, {MAX_DESCRIPTORS} "
                            f"descriptors a class, {MAX_POOL:,} distinct, {MAX_DESCRIPTOR_CHARS} characters each"),
        ("prompt template", f"{MAX_TEMPLATE_CHARS} characters, exactly one {{}} and no other braces"),
        ("database built in the app", f"{MAX_BUILD_IMAGES:,} images, {MAX_ARCHIVE_BYTES // MB} MB uncompressed, "
                                      f"compression {MAX_COMPRESSION_RATIO}:1 a file, names of {MAX_MEMBER_NAME_CHARS:,} "
                                      f"characters and {MAX_MEMBER_DEPTH} folders deep (INTERPRET_MAX_BUILD_IMAGES, "
                                      "INTERPRET_MAX_ARCHIVE_MB); kept a day"),
        ("long work in the app (builds, SAE and transcoder training)",
         f"one at a time, {MAX_JOBS_WAITING} waiting in line (each visitor sees their place and when it starts), "
         f"one a visitor; the same work asked for twice is done once; stopped within {JOB_STOP_S:g} s of its last "
         "visitor leaving, what it wrote removed"),
        ("upload (any file)", f"{MAX_UPLOAD_BYTES // MB} MB; uploads are deleted after {UPLOAD_LIFETIME_S // 60} min"),
        ("requests waiting", f"{MAX_WAITING_PER_VISITOR} a visitor, {MAX_WAITING_PER_POOL} a pool (analyses, look-ups, "
                             "builds: then busy, try again)"),
        ("analyses at once", "as many as the CPU cores for the slow ones (mutual knowledge, comparisons, model "
                             "scores), and as many beside them for the quick ones (heads, maps, neighbours, "
                             "interactions), so that a quick one never waits behind a slow one; torch uses one "
                             "thread each (INTERPRET_ANALYSIS_SLOTS, INTERPRET_QUICK_SLOTS)"),
        ("MCP sessions", f"{MAX_MCP_SESSIONS} at once, each a visitor of its own; closed after "
                         f"{MCP_SESSION_IDLE_S // 60} min idle"),
        ("look-ups at once", f"{LOOKUP_SLOTS} (head descriptions, text searches, model shapes)"),
        ("recent results kept", f"{RESULT_CACHE_BYTES // MB} MB per cache"),
        ("models kept loaded", f"{MODELS_KEPT}"),
    ]
    return "\n".join(["| what | limit |", "|---|---|", *(f"| {what} | {limit} |" for what, limit in rows)])


def check_number(value, name: str, low: float | None = None, high: float | None = None,
                 integer: bool = False) -> float | int:
    """`value` as a finite number (an int when `integer`) within [low, high], or a message naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InterpretError(f"{name} must be a number, not {_show(value)}.") from None
    if not math.isfinite(value):
        raise InterpretError(f"{name} must be a finite number, not {value}.")
    if integer and value != int(value):
        raise InterpretError(f"{name} must be a whole number, not {value}.")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low} to {high}" if low is not None and high is not None else \
            (f"at least {low}" if low is not None else f"at most {high}")
        raise InterpretError(f"{name} must be {bounds}, not {_show(value)}.")
    return int(value) if integer else value


def check_text(text, name: str = "The text", limit: int = MAX_TEXT_CHARS) -> str:
    """`text` (a string of at most `limit` characters), or a message naming `name` and the limit."""
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InterpretError(f"{name} must be text, not {type(text).__name__}.")
    if len(text) > limit:
        raise InterpretError(f"{name} is {len(text):,} characters long; the limit is {limit:,}.")
    return check_unicode(text, name)


def check_unicode(text: str, name: str = "The text") -> str:
    """`text` when it is valid Unicode (it can be written as UTF-8); a lone UTF-16 surrogate, which a client can
    send in raw JSON and which no font, tokenizer or file can take, gets a message naming where it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InterpretError(f"{name} holds an invalid character at position {error.start + 1} (a lone surrogate, "
                             f"{text[error.start]!r}); send it as UTF-8 text.") from None
    return text


_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"}  # controls, format (zero-width) and space characters


def visible(text: str) -> bool:
    """Whether `text` has a character a person can see (zero-width, control and space characters only: no)."""
    return any(unicodedata.category(char) not in _INVISIBLE for char in text)


def check_texts(texts: Sequence[str], name: str, limit: int = MAX_TEXTS) -> list[str]:
    """At most `limit` texts, each of at most MAX_TEXT_CHARS characters."""
    texts = list(texts)
    if len(texts) > limit:
        raise InterpretError(f"{name} holds {len(texts):,} texts; the limit is {limit}.")
    return [check_text(text, f"{name}: text {number}") for number, text in enumerate(texts, start=1)]


def check_template(template: str) -> str:
    """A class-prompt template: exactly one `{}` where the class name goes, and no other braces (a format string
    can otherwise ask for megabytes of padding)."""
    template = check_text(template, "The prompt template", MAX_TEMPLATE_CHARS)
    if template.count("{}") != 1 or template.replace("{}", "", 1).count("{") or "}" in template.replace("{}", "", 1):
        raise InterpretError(f"The prompt template must contain exactly one {{}} (where the class name goes) and no "
                             f"other braces, e.g. 'a photo of a {{}}'; got {_show(template)}.")
    return template


def check_file_size(path: str | Path, limit: int, what: str) -> int:
    """The size of the file at `path` when it is at most `limit` bytes; a message otherwise (and for a missing
    file)."""
    try:
        size = Path(path).stat().st_size
    except FileNotFoundError:
        raise InterpretError(f"No {what} at {path}.") from None
    except OSError as error:
        raise InterpretError(f"Could not read the {what} {path} ({error.strerror}).") from None
    if size > limit:
        raise InterpretError(f"The {what} is {size / MB:.1f} MB; the limit is {limit / MB:.0f} MB.")
    return size


def _show(value, width: int = 60) -> str:
    """A value for a message: its repr, cut."""
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."
