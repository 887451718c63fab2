"""Model bundles: everything a model's tabs need, in one folder that can be shipped to a host without the images.

A bundle is the folder `indexes/<model slug>/` (the one the CLI and the app use) plus thumbnails and a manifest:

    manifest.json, data-<id>/     the image database (`index.build_index`)
    head_labels.json              TextSpan descriptions and property labels of every head (`describe_heads`)
    thumbnails/<image path>.webp  the database images, longest side `THUMBNAIL_SIDE`: neighbours show them when
                                  the original collection is not there
    bundle.json                   model, tag, weights hash, open_clip version, image count, bank, layers, every
                                  file's size and SHA-256, and the SHA-256 of bundle.json itself

Where a model's folder is found, and how a bundle is checked before use: `folders`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import open_clip

from .errors import InterpretError
from .folders import BUNDLE_MANIFEST, HEAD_LABELS, HUB_PREFIX, THUMBNAIL_SIDE, THUMBNAILS, BundleError
from .index import ImageIndex, build_index
from .integrity import describe_file, write_hashed_manifest
from .jobs import JobBar
from .models import ClipModel


# --- building -----------------------------------------------------------------------------------------------------

def build_bundle(model: ClipModel, images: str | Path, out: str | Path, bank: str = "general",
                 layers: Sequence[int] | None = None, batch_size: int = 32, progress: bool = True,
                 engine=None, neuron_layers: Sequence[int] | None = None,
                 feature_layers: Sequence[int] = (), transcoder_layers: Sequence[int] = ()) -> Path:
    """Build `out/<model slug>/`: head labels of every head (TextSpan over `images` with `bank`: 'general', 'toy'
    or a text file), the image database (heads of `layers`, default the last 4), thumbnails, the neuron directions
    of `neuron_layers` (default: `neurons.default_neuron_layers`; described with the bank), an SAE on each of
    `feature_layers` and a transcoder of the MLP of each of `transcoder_layers` (default none: each kind trained on
    the images in one pass for all its layers, its features named with the bank), and bundle.json.
    Resumable (each step keeps what is finished) and atomic (bundle.json, which makes the folder a bundle, is
    written last). `engine`: where the images are
    decomposed (`engines.make_engine`; default: here). Returns the bundle's folder."""
    from .banks import bank_named
    from .images import list_images, readable_images
    from .textspan import describe_heads

    started = time.monotonic()
    folder = Path(out) / model.slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BUNDLE_MANIFEST).unlink(missing_ok=True)  # not a bundle until every part is written again
    texts = bank_named(bank)
    paths, _ = readable_images(list_images(images))  # unreadable ones: skipped here, listed by the database
    atlas = describe_heads(model, paths, texts, out_path=folder / HEAD_LABELS, progress=progress,  # every head
                           engine=engine, batch_size=batch_size)
    report = build_index(model, images, folder, layers=layers, batch_size=batch_size, progress=progress,
                         engine=engine)
    database = ImageIndex.open(folder, model)
    write_thumbnails(database, folder / THUMBNAILS, progress)
    from .dictionaries import FOLDERS, train_dictionaries_of
    from .neurons import default_neuron_layers, describe_neurons, neuron_directions, neurons_folder

    for layer in (default_neuron_layers(model) if neuron_layers is None else neuron_layers):
        describe_neurons(model, neuron_directions(model, images, layer, batch_size=batch_size, engine=engine,
                                                  progress=progress), texts).save(neurons_folder(folder, layer))
    for kind, chosen in (("sae", feature_layers), ("transcoder", transcoder_layers)):
        if chosen:  # a bundle's build makes its dictionaries again
            train_dictionaries_of(model, kind, chosen, images=images, bank=bank, out=folder, engine=engine,
                                  progress=progress, batch_size=batch_size, replace=True)
    manifest = {"model": model.name, "pretrained": model.pretrained, "label": model.label,
                "weights_sha256": model.weights_hash, "open_clip": open_clip.__version__, "images": report.count,
                "skipped": len(report.skipped), "bank": Path(bank).name if bank not in ("general", "toy") else bank,
                "bank_size": len(texts), "head_labels_images": atlas.images, "layers": list(database.layers),
                "neuron_layers": sorted(int(path.name.split("-")[1]) for path in (folder / "neurons").glob("layer-*")),
                "feature_layers": sorted(int(path.name.split("-")[1]) for path in (folder / FOLDERS["sae"]).glob(
                    "layer-*")),
                "transcoder_layers": sorted(int(path.name.split("-")[1]) for path in
                                            (folder / FOLDERS["transcoder"]).glob("layer-*")),
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(time.monotonic() - started, 1),
                "files": {name: describe_file(folder / name) for name in _files(folder)}}
    _write_manifest(folder, manifest)
    return folder


ESTIMATE_BATCH = 8  # images decomposed to measure a model's cost an image
ESTIMATE_SAMPLES = 4  # of a visitor's own images, decoded, preprocessed and thumbnailed to measure what they cost
TEXTSPAN_OUTPUTS = 256  # outputs of one head TextSpan is timed on
_model_costs: dict[tuple, tuple[float, float]] = {}  # (model slug, bank[, kind, layer]) -> (s an image, s in all)


def estimate_build(model: ClipModel, images: int, bank: str = "general", samples: Sequence = (),
                   neuron_layers: Sequence[int] | None = None, feature_layers: Sequence[int] = (),
                   transcoder_layers: Sequence[int] = ()) -> tuple[float, float]:
    """(seconds to build a bundle of `images` images on this machine, seconds an image), counting what the build
    does (`neuron_layers`, `feature_layers` and `transcoder_layers` as `build_bundle` takes them). Measured once per model and bank:
    decomposing a batch over every layer (the head labels) and over the database's layers, the bank's texts (a
    sample of them) and TextSpan (one head, on `TEXTSPAN_OUTPUTS` outputs, for every head); once per model, bank
    and layer, the neuron directions and SAEs asked for (`_layer_cost`). Measured on `samples` (a few of the images
    themselves: paths or bytes) at each call: what reading them costs (`_handling_cost`, once per pass over the
    images), which grows with a photo's size where its format cannot be decoded reduced."""
    from .neurons import default_neuron_layers

    per_image, fixed = _model_cost(model, bank)
    layers = [("neurons", layer) for layer in (default_neuron_layers(model) if neuron_layers is None
                                               else neuron_layers)] + [("features", layer) for layer in feature_layers] \
        + [("transcoders", layer) for layer in transcoder_layers]
    reads = 2 + sum(PASSES[kind] for kind, _ in layers)
    handling = _handling_cost(model, samples[:ESTIMATE_SAMPLES], reads) if samples else 0.0
    for kind, layer in layers:
        more_per_image, more_fixed = _layer_cost(model, bank, kind, layer)
        per_image, fixed = per_image + more_per_image, fixed + more_fixed
    return images * (per_image + handling) + fixed, per_image + handling


SAE_TIMED_TOKENS = 4096  # random token states a dictionary of the real size trains on to time a token


def _layer_cost(model: ClipModel, bank: str, kind: str, layer: int) -> tuple[float, float]:
    """(seconds an image, seconds in all) of the neuron directions (`kind` "neurons"), the SAE ("features") or the
    transcoder ("transcoders") of `layer`, measured on `ESTIMATE_BATCH` drawn images. The part an image is timed
    alone, warm, for each layer: the two passes of `NeuronTask`; or the dictionary's inputs, its training (on
    `SAE_TIMED_TOKENS` random rows) and its atlas pass. The fixed part (describing with the bank, whose texts the
    build has already embedded; the SVDs; the dictionary's start) is the rest of making them whole from those
    images, measured once per model, bank and kind: it is the same for every layer."""
    import tempfile

    import numpy as np
    import torch
    from PIL import Image

    from .banks import bank_named
    from .dictionaries import Dictionary, dictionary_inputs, feature_atlas, train_dictionaries, train_dictionaries_of
    from .dictionaries.streams import row_width
    from .neurons import NeuronTask, describe_neurons, neuron_directions

    key, fixed_key = (model.slug, bank, kind, layer), (model.slug, bank, kind)
    if key in _model_costs:
        return _model_costs[key]

    def timed(work) -> float:
        started = time.perf_counter()
        work()
        return time.perf_counter() - started

    generator = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        pictures = [Image.fromarray(generator.integers(0, 256, (*model.geometry.image_size, 3), np.uint8))
                    for _ in range(ESTIMATE_BATCH)]
        for number, picture in enumerate(pictures):
            picture.save(Path(scratch) / f"{number}.png")
        batch, count = model.preprocess_images(pictures), len(pictures)
        if kind == "neurons":
            task = NeuronTask(layer)
            task(model, [(["0"], batch[:1])], [])  # warm: the layer's write values are made once
            per_image = 2 * timed(lambda: task(model, [([str(i) for i in range(count)], batch)], [])) / count
            if fixed_key not in _model_costs:
                texts = bank_named(bank)
                model.encode_texts(list(texts.texts))  # the build has them already (the head labels'): kept
                whole = timed(lambda: describe_neurons(model, neuron_directions(model, scratch, layer, progress=False),
                                                       texts))
                _model_costs[fixed_key] = (0.0, max(0.0, whole - per_image * count))
        else:
            chosen = "sae" if kind == "features" else "transcoder"
            dictionary_inputs(model, batch[:1], chosen, [layer])  # warm
            forward = timed(lambda: dictionary_inputs(model, batch, chosen, [layer])) / count
            rows = torch.randn(SAE_TIMED_TOKENS // model.geometry.tokens + 1, model.geometry.tokens,
                               row_width(model, chosen), generator=torch.Generator().manual_seed(0))
            training = timed(lambda: train_dictionaries([{layer: rows}], chosen, model.geometry.width, [layer],
                                                        progress=False)) / len(rows)
            started = time.perf_counter()
            _, folder = train_dictionaries_of(model, chosen, [layer], images=scratch, bank=bank,
                                              out=Path(scratch) / "out", progress=False)[layer]
            whole = time.perf_counter() - started
            trained, _ = Dictionary.load(folder)
            per_image = forward + training + timed(lambda: feature_atlas(model, trained, scratch,
                                                                         progress=False)) / count
            _model_costs.setdefault(fixed_key, (0.0, max(0.0, whole - per_image * count)))
    _model_costs[key] = (per_image, _model_costs[fixed_key][1])
    return _model_costs[key]


def _model_cost(model: ClipModel, bank: str) -> tuple[float, float]:
    """(seconds an image for the two decompositions, seconds for the bank's texts and TextSpan over every head)."""
    import torch

    from .banks import bank_named
    from .decompose import decompose_image
    from .index import default_layers
    from .textspan import textspan

    key = (model.slug, bank)
    if key not in _model_costs:
        texts = bank_named(bank)
        batch = torch.rand(ESTIMATE_BATCH, 3, *model.geometry.image_size, generator=torch.Generator().manual_seed(0))
        decompose_image(model, batch[:1], spatial=False)  # warm-up
        started = time.perf_counter()
        decompose_image(model, batch, spatial=False)
        decompose_image(model, batch, layers=default_layers(model), spatial=False)
        per_image = (time.perf_counter() - started) / len(batch)
        sample = list(texts.texts[:64])
        started = time.perf_counter()
        embedded = model.encode_texts(sample)
        encoding = (time.perf_counter() - started) / len(sample) * len(texts)
        outputs = torch.randn(TEXTSPAN_OUTPUTS, embedded.shape[1], generator=torch.Generator().manual_seed(0))
        started = time.perf_counter()
        textspan(outputs, embedded.repeat(max(1, len(texts) // len(sample)), 1))
        per_head = time.perf_counter() - started
        _model_costs[key] = (per_image, encoding + per_head * model.geometry.layers * model.geometry.heads)
    return _model_costs[key]


PASSES = {"neurons": 2, "features": 3, "transcoders": 3}  # passes that read the images: a layer's neuron directions
# (the effects, then the top images'), a dictionary's (its training with the held-out images, its atlas, its names)


def _handling_cost(model: ClipModel, samples: Sequence, reads: int) -> float:
    """Seconds an image for what the build does with each picture itself, measured on `samples` (one that cannot
    be read is left out: the build skips it too): a zip's member extracted (`archives.extract_images`: a large
    picture that cannot be decoded reduced kept at the model's size), checking that it can be read (decoded small),
    reading and preprocessing it as the model reads it `reads` times (once a pass over the images), and its
    thumbnail."""
    import io

    from .images import CHECK_SIDE, load_image, reduced_copy

    spent, measured = 0.0, 0
    for sample in samples:
        try:
            started = time.perf_counter()
            if isinstance(sample, bytes):  # a zip's member: extracted at the model's size when it is much larger
                sample = reduced_copy(sample, model.reading_side) or sample
            load_image(sample, max_side=CHECK_SIDE)
            checked = time.perf_counter()
            model.preprocess(model.read_image(sample))
            read = time.perf_counter()
            load_image(sample, max_side=THUMBNAIL_SIDE).save(io.BytesIO(), format="WEBP", quality=82)
        except InterpretError:
            continue
        spent += (checked - started) + reads * (read - checked) + (time.perf_counter() - read)
        measured += 1
    return spent / measured if measured else 0.0


def write_thumbnails(database: ImageIndex, out: Path, progress: bool = True) -> None:
    """A WebP of each database image, longest side `THUMBNAIL_SIDE` (existing ones are kept: resumable)."""
    from .images import load_image

    for entry in JobBar(database.entries, desc="thumbnails", unit="image", disable=not progress):
        target = out / f"{entry['path']}.webp"
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        picture = load_image(database.root / entry["path"], max_side=THUMBNAIL_SIDE)
        temporary = target.with_name(target.name + ".tmp")
        picture.save(temporary, format="WEBP", quality=82)
        os.replace(temporary, target)


def _files(folder: Path) -> list[str]:
    """Every file of the bundle (relative, sorted), bundle.json and leftovers of interrupted writes excepted."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.is_file() and path.name != BUNDLE_MANIFEST and not path.name.endswith(".tmp")
                  and ".building" not in path.parts)


def _write_manifest(folder: Path, manifest: dict) -> None:
    write_hashed_manifest(folder / BUNDLE_MANIFEST, manifest, "bundle_sha256")


# --- publishing ---------------------------------------------------------------------------------------------------

def publish(source: str | Path, target: str, models: dict[str, ClipModel] | None = None) -> list[str]:
    """Upload the bundle `source` (a bundle's folder, or a folder of bundles) to `target`
    ('hf://datasets/ORG/REPO'; needs a token with write access, e.g. `huggingface-cli login`). Each bundle's files
    are checked against its manifest first. Returns the sub-folders uploaded."""
    from huggingface_hub import upload_folder

    if not target.startswith(HUB_PREFIX):
        raise BundleError(f"Publish to hf://datasets/ORG/REPO, not {target!r}.")
    source = Path(source)
    bundles = [source] if (source / BUNDLE_MANIFEST).is_file() else \
        sorted(path.parent for path in source.glob(f"*/{BUNDLE_MANIFEST}"))
    if not bundles:
        raise BundleError(f"No bundle in {source} (no {BUNDLE_MANIFEST}).")
    for folder in bundles:
        _check_files(folder)
    repository = target[len(HUB_PREFIX):].strip("/")
    for folder in bundles:
        upload_folder(repo_id=repository, repo_type="dataset", folder_path=str(folder), path_in_repo=folder.name,
                      commit_message=f"Bundle of {folder.name}")
    return [folder.name for folder in bundles]


def _check_files(folder: Path) -> None:
    """The files of a bundle against its manifest (without a model to compare weights with)."""
    manifest = json.loads((folder / BUNDLE_MANIFEST).read_text())
    for name, expected in manifest["files"].items():
        file = folder / name
        if not file.is_file() or describe_file(file)["sha256"] != expected["sha256"]:
            raise BundleError(f"The bundle {folder.name} is damaged or partial: {name}.")
