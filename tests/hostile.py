"""Hostile requests to the app's named endpoints, each with the message it must get: used by
tests/test_limits.py (handlers called in-process) and benchmarks/load_test.py (a running server, timed, with
its memory watched)."""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

NAN, INFINITY = float("nan"), float("inf")
TOY_CLASSES = "toy world: 24 classes 'a {colour} {shape}'"  # the Mutual knowledge tab's preset (app.TOY_CLASSES)


@dataclass(frozen=True)
class Upload:
    """A file argument: a path in-process, `handle_file(path)` through gradio_client."""

    path: Path


@dataclass(frozen=True)
class Hostile:
    name: str
    api_name: str  # the endpoint, without the slash
    arguments: tuple
    message: str  # a regular expression the answer's message must match


def png_header(width: int, height: int) -> bytes:
    """A PNG file that declares `width` x `height` pixels and holds almost none: a few hundred bytes that a
    decoder would expand to gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def hostile_requests(folder: Path, model: str, image: Path) -> list[Hostile]:
    """The requests, with their files written into `folder`; `model` is a model label, `image` a good image."""
    folder.mkdir(parents=True, exist_ok=True)
    tall = folder / "tall.png"
    tall.write_bytes(png_header(8, 1_000_000))
    huge = folder / "huge.png"
    huge.write_bytes(png_header(7700, 7700))
    big_json = folder / "big.json"
    big_json.write_text(json.dumps({f"class {i}": ["x" * 1000] * 10 for i in range(300)}))  # ~3 MB
    nested = folder / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    many_classes = folder / "many.json"
    many_classes.write_text(json.dumps({"a": ["b"] * 5000, "c": ["d"]}))
    not_json = folder / "not.json"
    not_json.write_bytes(bytes(range(256)) * 100)
    good, picture = Upload(image), Upload(image)
    interaction = ("2", "", 0.6)  # span, box, opacity

    def interact(caption="a red circle", steps=4, span="", box=""):
        return (model, good, caption, 2, 0, steps, "midpoint", span, box, 0.6)

    def mutual(file, template="{}"):
        return (model, good, "my descriptor file (JSON)", Upload(file), template, 3)

    return [
        Hostile("tall image 8 x 1,000,000 px", "heads", (model, Upload(tall), "a circle", 5), "too elongated|too large"),
        Hostile("7700 x 7700 image", "topic_segmentation", (model, Upload(huge), "a circle", "all", 0.6, "", "all"),
                "too large .*megapixels"),
        Hostile("token range 0-100000000", "interaction", interact(span="0-100000000"), "there is no token"),
        Hostile("token span of 10,000 characters", "interaction", interact(span="1," * 5000), "token span .* limit"),
        Hostile("NaN box", "interaction", interact(box="nan, 0, 10, 10"), "Box .* not understood"),
        Hostile("infinite box", "interaction", interact(box="0, 0, inf, 10"), "Box .* not understood"),
        Hostile("steps NaN", "interaction", (model, good, "a red circle", 2, 0, NAN, "midpoint", *interaction),
                "Steps must be a finite number"),
        Hostile("steps 10^9", "interaction", interact(steps=10 ** 9), "Steps must be from 1 to"),
        Hostile("a 40,000-letter word", "heads", (model, picture, "a" * 40_000, 5), "characters long; the limit"),
        Hostile("5,000-line relative-to", "topic_segmentation",
                (model, good, "something red", "all", 0.6, "\n".join(f"text {i}" for i in range(5000)), "all"),
                "holds 5,000 texts; the limit is"),
        Hostile("heads list of 100,000 characters", "topic_segmentation",
                (model, good, "something red", "1.1, " * 20_000, 0.6, "", "all"), "heads list is .* limit"),
        Hostile("format-string template", "mutual_knowledge", mutual(big_json, "{0:>50000000}{{}}"),
                "exactly one \\{\\}"),
        Hostile("3 MB descriptor file", "mutual_knowledge", mutual(big_json), "descriptor file is .* MB; the limit"),
        Hostile("deeply nested JSON", "mutual_knowledge", mutual(nested), "nested too deeply|must map each class"),
        Hostile("5,000 descriptors in a class", "mutual_knowledge", mutual(many_classes), "5,000 descriptors; the limit"),
        Hostile("binary descriptor file", "mutual_knowledge", mutual(not_json), "not a JSON file"),
        Hostile("top heads 10^9", "heads", (model, good, "a circle", 10 ** 9), "top heads must be from 1 to"),
        Hostile("k NaN", "image_neighbours", (model, good, -1, 0, NAN), "neighbours must be a finite number"),
        Hostile("layer 10^300", "head_atlas", (model, 1e300, 0), "layer must be from -1000000 to 1000000, not 1"),
        Hostile("head infinite", "head_atlas", (model, 0, INFINITY), "head must be a finite number"),
        Hostile("opacity 5", "contrastive_segmentation", (model, good, "a", "b", "all", 5, "all"), "opacity must be from 0"),
        Hostile("concepts 10^6", "mutual_knowledge", (model, good, TOY_CLASSES, None, "{}", 10 ** 6),
                "Concepts must be from|greater than maximum"),
        Hostile("unknown model", "heads", ("ViT-Z / nothing", good, "a circle", 5), "Unknown model"),
        Hostile("no image", "heads", (model, None, "a circle", 5), "Upload an image first"),
        Hostile("neurons 10^9", "neurons", (model, good, "a circle", -3, 10 ** 9), "neurons must be from 1 to"),
        Hostile("MLP layer 10^300", "neurons", (model, good, "a circle", 1e300, 5), "layer must be from -1000000"),
        Hostile("the last MLP", "neurons", (model, good, "a circle", -1, 5), "no later heads"),
        Hostile("neuron 10^6", "neuron", (model, -3, 10 ** 6), "neuron must be from 0 to"),
        Hostile("neuron NaN", "neuron", (model, -3, NAN), "neuron must be a finite number"),
        Hostile("features 10^9", "features", (model, good, "a circle", 1, 10 ** 9), "features must be from 1 to"),
        Hostile("feature strength 10^9", "feature_intervention", (model, good, "a circle", 1, 0, 10 ** 9),
                "strength must be from 0 to"),
        Hostile("feature block 10^6", "feature", (model, 10 ** 6, 0), "there is no layer|layer must be"),
        Hostile("circuit features 10^9", "circuits", (model, good, "a circle", "", 10 ** 9, 0.8, 0.98),
                "features kept must be from 1 to"),
        Hostile("circuit threshold 2", "circuits", (model, good, "a circle", "", 100, 2.0, 0.98),
                "node threshold must be from 0 to 1"),
        Hostile("circuit without a caption", "circuits", (model, good, "", "", 100, 0.8, 0.98), "Type a caption"),
    ]
