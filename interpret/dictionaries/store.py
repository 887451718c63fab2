"""Where a model's dictionaries live, and the whole of making them: train, measure, describe, store.

In a model's folder (`indexes/<slug>`, a bundle): `features/layer-<l>/` the SAE of the stream after block l,
`transcoders/layer-<l>/` the transcoder of MLP l; each holds `sae.safetensors` + `sae.json` (`Dictionary.save`)
and its atlas (`atlas.safetensors` + `atlas.json`). The toy models ship a transcoder for every block in their asset
folder (`assets/<toy>/transcoders/layer-<l>/`); their atlases are made over the toy database on first use.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ..errors import InterpretError
from ..integrity import LoadedFiles
from ..models import ClipModel, layer_index
from .atlas import ATLAS_MANIFEST, FeatureAtlas, describe_features
from .model import SAE_MANIFEST, STREAMS, Dictionary
from .streams import DictionaryInputsTask, images_within, row_width, task_blocks, toy_blocks
from .training import DictionaryReport, evaluate, train_dictionaries

FOLDERS = {"sae": "features", "transcoder": "transcoders", "readout": "readout"}  # in a model's folder:
# <folder>/layer-<l>/ (the readout's dictionary at the last block)
TOY_TRAINING_TOKENS = 1_000_000  # token states the toy models' dictionaries train on (about 15,000 fresh scenes)
TOY_HELD_OUT_IMAGES = 1000  # fresh toy scenes (other seeds) a toy dictionary is measured on
MIN_EXPLAINED_VARIANCE = 0.5  # a dictionary that explains less of held-out states is no model's default
FEW_TOKENS_PER_FEATURE = 10  # a dictionary trained on fewer tokens than this a feature: its features say little
HOLD_OUT_EVERY = 10  # every 10th image read is held out of a dictionary's training, to measure it on
HELD_OUT_IMAGES = 200  # at most (the rest train): their rows of every layer are held in memory
DICTIONARIES_KEPT = 8  # dictionaries (with their atlases) kept loaded; a ViT-B SAE is 75 MB


def dictionary_folder(folder, kind: str, layer: int) -> Path:
    """Where a model folder keeps its dictionary of `kind` ("sae", "transcoder", "readout") at block `layer`."""
    if kind not in STREAMS:
        raise InterpretError(f"Unknown dictionary kind '{kind}': 'sae', 'transcoder' or 'readout'.")
    return Path(folder) / FOLDERS[kind] / f"layer-{layer:02d}"


def features_folder(folder, layer: int) -> Path:
    """Where a model folder keeps the SAE of the stream after block `layer`."""
    return dictionary_folder(folder, "sae", layer)


def shipped_folder(model: ClipModel, kind: str, layer: int) -> Path | None:
    """A toy model's own dictionary in its asset folder, or None."""
    from ..paths import TOY_MODELS, is_toy

    if not is_toy(model.name):
        return None
    folder = dictionary_folder(TOY_MODELS[model.name], kind, layer)
    return folder if (folder / SAE_MANIFEST).is_file() else None


def stored_layers(model: ClipModel, kind: str, folder: str | Path | None = None) -> list[int]:
    """The blocks that have a stored dictionary of `kind` (in the model's folder or `folder`, or shipped)."""
    from ..folders import model_folder

    root = Path(folder or model_folder(model))
    return [layer for layer in range(model.geometry.layers)
            if (dictionary_folder(root, kind, layer) / SAE_MANIFEST).is_file() or shipped_folder(model, kind, layer)]


_kept = LoadedFiles(DICTIONARIES_KEPT)  # by their folder's sae.json, loaded again when it or atlas.json changes


def stored_dictionary(model: ClipModel, kind: str, layer: int, folder: str | Path | None = None
                      ) -> tuple[Dictionary, FeatureAtlas | None]:
    """The dictionary of `kind` at block `layer` (and its atlas, when there is one) in the model's folder (or the
    model folder `folder`; a toy's shipped one otherwise): read once and kept while its files stay the same."""
    from ..folders import model_folder

    layer = layer_index(layer, model.geometry.layers, model.label)
    own = dictionary_folder(folder or model_folder(model), kind, layer)
    weights = own if (own / SAE_MANIFEST).is_file() else (shipped_folder(model, kind, layer) or own)

    def load() -> tuple[Dictionary, FeatureAtlas | None]:
        dictionary, manifest = Dictionary.load(weights)
        if manifest.get("weights_sha256") not in (None, model.weights_hash):
            raise InterpretError(f"The {dictionary.config.name} in {weights} was trained on other weights than "
                                 f"{model.label}'s.")
        if dictionary.config.stream != kind or dictionary.config.layer != layer:
            raise InterpretError(f"{weights} holds the {dictionary.config.name}, not what its folder says.")
        dictionary.report = manifest.get("report")  # how it was trained and how well it works (trained here)
        try:
            return dictionary, FeatureAtlas.load(own)
        except InterpretError:
            return dictionary, None

    return _kept.get(weights / SAE_MANIFEST, load, also=[own / ATLAS_MANIFEST])


def stored_sae(model: ClipModel, layer: int, folder: str | Path | None = None
               ) -> tuple[Dictionary, FeatureAtlas | None]:
    """The SAE of the stream after block `layer` (see `stored_dictionary`)."""
    return stored_dictionary(model, "sae", layer, folder)


def described(model: ClipModel, kind: str, layer: int, bank=None, folder: str | Path | None = None
              ) -> tuple[Dictionary, FeatureAtlas]:
    """The stored dictionary with its atlas: a toy's shipped dictionary without one is described over the toy
    database first (and its atlas stored in the model's folder)."""
    from ..banks import bank_named, default_bank
    from ..folders import model_folder
    from ..paths import is_toy
    from ..toy.examples import draw_toy_database

    dictionary, atlas = stored_dictionary(model, kind, layer, folder)
    if atlas is not None:
        return dictionary, atlas
    if not is_toy(model.name):
        raise InterpretError(f"The {dictionary.config.name} of {model.label} has no atlas (its features' top images "
                             "and names): describe it with python -m interpret features describe.")
    atlas = describe_features(model, dictionary, draw_toy_database(model.index_dir / "images"),
                              bank_named(bank or default_bank(model.name)), progress=False)
    atlas.save(dictionary_folder(folder or model_folder(model), kind, dictionary.config.layer))
    return dictionary, atlas


def provenance(dictionary: Dictionary) -> tuple[str, str | None]:
    """(what a dictionary was trained on and how well it works, in words; a warning when that is too little to
    trust its features, or None)."""
    report = getattr(dictionary, "report", None)
    if not report:
        return dictionary.config.source, None
    tokens, variance = int(report.get("tokens", 0)), float(report.get("explained_variance", 0.0))
    said = (f"trained here on {tokens:,} tokens; it explains {variance:.2f} of the variance of held-out "
            + ("token states" if dictionary.config.kind == "sae" else "MLP outputs"))
    what = "SAE" if dictionary.config.kind == "sae" else "transcoder"
    if tokens < FEW_TOKENS_PER_FEATURE * dictionary.config.features:
        return said, (f"This {what} was trained on {tokens:,} tokens for {dictionary.config.features:,} features "
                      f"(fewer than {FEW_TOKENS_PER_FEATURE} a feature): its features and their names say little; "
                      "build it from more images.")
    if variance < MIN_EXPLAINED_VARIANCE:
        return said, f"This {what} explains only {variance:.2f} of the variance: its features say little."
    return said, None


def default_layer(model: ClipModel) -> int:
    """The block whose dictionary is shown unless told: the middle of the tower (the toy's block 1 of 4)."""
    return max(0, model.geometry.layers // 2 - 1)


def held_out_of(blocks, held_out: list) -> Iterator[dict]:
    """`{layer: [n, T, C]}` blocks less every `HOLD_OUT_EVERY`-th image among those that were read, which go to
    `held_out` instead (as `{layer: tensor}`): the held-out images are chosen among what could be read (unreadable
    files anywhere in the set leave it whole)."""
    seen = kept = 0
    for block in blocks:
        count = len(next(iter(block.values())))
        chosen = torch.arange(seen, seen + count) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
        chosen &= torch.cumsum(chosen, 0) + kept <= HELD_OUT_IMAGES
        seen, kept = seen + count, kept + int(chosen.sum())
        held_out.append({layer: torch.as_tensor(rows)[chosen] for layer, rows in block.items()})
        if (~chosen).any():
            yield {layer: torch.as_tensor(rows)[~chosen] for layer, rows in block.items()}


def train_dictionaries_of(model: ClipModel, kind: str, layers: Sequence[int], images: str | Path | None = None,
                          tokens: int | None = None, k: int = 32, features: int | None = None,
                          activation: str = "topk", skip: bool = False, bank: str | None = None,
                          out: str | Path | None = None, engine=None, progress: bool = True,
                          on_step: Callable[[int, float], None] | None = None, batch_size: int = 32,
                          replace: bool = False, describe: bool = True
                          ) -> dict[int, tuple[DictionaryReport, Path]]:
    """Train a dictionary of `kind` ("sae": of the stream after each block; "transcoder": of each block's MLP;
    "readout": of what the readout reads, one vector an image, `layers` then the last block alone) for every block
    in `layers`, all from ONE forward pass per image (the images below `images`, every token once; or,
    for the toy models without `images`, `TOY_TRAINING_TOKENS` of fresh toy scenes); measure each on held-out rows
    (1,000 other toy scenes, or every 10th image read); describe its features over the model's database images (the
    toy's scenes, or `images`) with `bank`; store each in `out` (default: the model's folder). A dictionary stored
    there already is replaced only with `replace` (refused before any work otherwise); one that explains less than
    `MIN_EXPLAINED_VARIANCE` of its held-out targets is not stored as the model's own (only where `out` names).
    Returns {layer: (report, folder)}."""
    from ..banks import bank_named, default_bank
    from ..engines import LocalEngine, run_blocks
    from ..folders import model_folder
    from ..images import list_images
    from ..paths import is_toy
    from ..toy.examples import draw_toy_database

    layers = sorted({layer_index(layer, model.geometry.layers, model.label) for layer in layers})
    if kind == "readout":
        layers = [model.geometry.layers - 1]
    if not layers:
        raise InterpretError("Give at least one block to train a dictionary of.")
    width = model.geometry.width
    folders = {layer: dictionary_folder(out or model_folder(model), kind, layer) for layer in layers}
    taken = [layer for layer, folder in folders.items() if (folder / SAE_MANIFEST).is_file()]
    what = {"sae": "SAE", "transcoder": "transcoder", "readout": "readout SAE"}[kind]
    if taken and not replace:
        raise InterpretError(f"A {what} of block {', '.join(map(str, taken))} is stored in "
                             f"{folders[taken[0]].parent} already; give another out folder, or replace=True "
                             "(--replace) to train over it.")
    held_out: list[dict] = []
    if images is None:
        if not is_toy(model.name):
            raise InterpretError(f"Give the images to train the {what} on (a folder).")
        tokens = tokens or TOY_TRAINING_TOKENS
        per_image = 1 if kind == "readout" else model.geometry.tokens
        stream = toy_blocks(model, kind, layers, -(-tokens // per_image))
        database = draw_toy_database(model.index_dir / "images")
        held_out = [{layer: torch.from_numpy(rows) for layer, rows in block.items()}
                    for block in toy_blocks(model, kind, layers, TOY_HELD_OUT_IMAGES, seed=3_900_000)]
    else:
        root = Path(images).resolve()
        names = [path.relative_to(root).as_posix() for path in list_images(root)]
        blocks = run_blocks(engine or LocalEngine(), model, root, names, DictionaryInputsTask(kind, tuple(layers)),
                            batch_size, images_within(model, row_width(model, kind) * len(layers)), progress=False,
                            description="token states")
        stream = held_out_of(task_blocks(blocks, layers), held_out)
        database = root
    trained = train_dictionaries(stream, kind, width, layers, tokens=tokens, progress=progress, on_step=on_step,
                                 features=features, activation=activation, k=k, skip=skip)
    results = {}
    chosen_bank = bank_named(bank or default_bank(model.name)) if describe else None
    for layer, (dictionary, training) in trained.items():
        rows = [block[layer].reshape(-1, block[layer].shape[-1]) for block in held_out if len(block[layer])]
        report = training if not rows else dataclasses.replace(evaluate(dictionary, rows), tokens=training.tokens,
                                                               seconds=training.seconds)
        if out is None and report.explained_variance < MIN_EXPLAINED_VARIANCE:
            raise InterpretError(
                f"The {what} of block {layer} explains {report.explained_variance:.2f} of the variance of held-out "
                f"{'MLP outputs' if kind == 'transcoder' else 'token states'} (below {MIN_EXPLAINED_VARIANCE}): not stored "
                f"as {model.label}'s. Train on more tokens or images, or give an out folder to keep it anyway.")
        dictionary.save(folders[layer], model=model.label, weights_sha256=model.weights_hash,
                        report=dataclasses.asdict(report))
        if chosen_bank is not None:
            describe_features(model, dictionary, database, chosen_bank, engine, progress,
                              batch_size).save(folders[layer])
        results[layer] = (report, folders[layer])
    return results


def train_features(model: ClipModel, layer: int, images: str | Path | None = None, tokens: int | None = None,
                   k: int = 32, features: int | None = None, activation: str = "topk", bank: str | None = None,
                   out: str | Path | None = None, engine=None, progress: bool = True,
                   on_step: Callable[[int, float], None] | None = None, batch_size: int = 32,
                   replace: bool = False) -> tuple[DictionaryReport, Path]:
    """The SAE of the stream after block `layer` (see `train_dictionaries_of`): (its report, its folder)."""
    layer = layer_index(layer, model.geometry.layers, model.label)
    return train_dictionaries_of(model, "sae", [layer], images, tokens, k, features, activation, False, bank, out,
                                 engine, progress, on_step, batch_size, replace)[layer]
