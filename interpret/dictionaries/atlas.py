"""A dictionary's features over a set of images: each feature's top images, how often it fires, its name."""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InterpretError
from ..integrity import write_json_atomic
from ..jobs import checkpoint
from ..models import ClipModel
from .model import Dictionary
from .streams import DictionaryInputsTask, images_within, row_width

ATLAS_MANIFEST = "atlas.json"  # beside a dictionary's files: its atlas (`FeatureAtlas`)
FEATURE_TOP_IMAGES = 16  # each feature's top images kept (by its largest activation on one of the image's tokens)


@dataclass
class FeatureAtlas:
    """What a dictionary's F features do over a set of `count` images (`feature_atlas`).

    top_rows `[F, top]` each feature's images of largest activation (rows of `names`; -1 where fewer fired),
    top_values `[F, top]` that activation; frequency `[F]` the share of tokens it fires on; mean_activation `[F]`
    its mean where it fires; labels: per feature (text, tag, score) from a text bank (`name_features`), or None."""

    layer: int
    top_rows: torch.Tensor
    top_values: torch.Tensor
    frequency: torch.Tensor
    mean_activation: torch.Tensor
    names: list[str]
    root: str
    labels: list[tuple[str, str, float]] | None = None
    bank: str = ""

    @property
    def count(self) -> int:
        return len(self.names)

    def save(self, folder: Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"atlas.safetensors.{uuid.uuid4().hex[:8]}.tmp"
        save_file({name: getattr(self, name).contiguous() for name in
                   ("top_rows", "top_values", "frequency", "mean_activation")}, str(temporary))
        os.replace(temporary, folder / "atlas.safetensors")
        write_json_atomic(folder / ATLAS_MANIFEST, {"layer": self.layer, "names": self.names, "root": self.root,
                                                  "labels": self.labels, "bank": self.bank})
        return folder

    @classmethod
    def load(cls, folder: Path) -> "FeatureAtlas":
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            manifest = json.loads((folder / ATLAS_MANIFEST).read_text())
            tensors = load_file(str(folder / "atlas.safetensors"))
        except (OSError, ValueError) as error:
            raise InterpretError(f"No feature atlas in {folder} ({error}).") from None
        labels = [tuple(label) for label in manifest["labels"]] if manifest.get("labels") else None
        return cls(manifest["layer"], names=manifest["names"], root=manifest["root"], labels=labels,
                   bank=manifest.get("bank", ""), **tensors)


def token_choice(model: ClipModel, dictionary: Dictionary) -> slice:
    """The tokens a dictionary reads: all, or the patches only (a saev checkpoint trained on its 'content' tokens)."""
    return slice(model.geometry.prefix, None) if dictionary.config.tokens == "patches" else slice(None)


def inputs_of(dictionary: Dictionary, rows: torch.Tensor) -> torch.Tensor:
    """`DictionaryInputsTask` rows `[..., C]` -> what the dictionary reads `[..., W]`."""
    return rows[..., :dictionary.config.width]


def feature_atlas(model: ClipModel, dictionary: Dictionary, images, top: int = FEATURE_TOP_IMAGES,
                  batch_size: int = 32, engine=None, progress: bool = True) -> FeatureAtlas:
    """Each feature's top images below the folder `images` (by its largest activation on a token), how often it
    fires and how strongly: one streaming pass (`engine`: local by default, or Ray), memory F x top."""
    from ..engines import LocalEngine, run_blocks
    from ..images import list_images

    root = Path(images).resolve()
    names = [path.relative_to(root).as_posix() for path in list_images(root)]
    count, layer = dictionary.config.features, dictionary.config.layer
    best_values, best_rows = torch.full((count, 0), -1.0), torch.full((count, 0), -1, dtype=torch.long)
    fired, total, tokens, kept = torch.zeros(count), torch.zeros(count), 0, []
    chunk = images_within(model, count)  # codes [n, T, F] of this many images at a time: bounded bytes
    task = DictionaryInputsTask(dictionary.config.stream, (layer,))
    for block in run_blocks(engine or LocalEngine(), model, root, names, task, batch_size,
                            images_within(model, row_width(model, dictionary.config.stream)), progress=progress,
                            description="features of the images"):
        if not block.rows:
            continue
        states = inputs_of(dictionary, torch.from_numpy(block.arrays[f"layer-{layer}"]))[
            :, token_choice(model, dictionary)]
        peaks = []
        for start in range(0, len(states), chunk):
            checkpoint()
            codes = dictionary.encode(states[start:start + chunk])  # [n, T', F]
            fired += (codes > 0).sum(dim=(0, 1))
            total += codes.sum(dim=(0, 1))
            tokens += codes.shape[0] * codes.shape[1]
            peaks.append(codes.amax(dim=1))
        peaks = torch.cat(peaks).T  # [F, n]
        rows = torch.arange(len(kept), len(kept) + len(block.rows)).expand(count, -1)
        values = torch.cat([best_values, peaks], dim=1)
        chosen = values.topk(min(top, values.shape[1]), dim=1).indices
        best_values = values.gather(1, chosen)
        best_rows = torch.cat([best_rows, rows], dim=1).gather(1, chosen)
        kept += block.rows
    best_rows = torch.where(best_values > 0, best_rows, torch.full_like(best_rows, -1))
    return FeatureAtlas(layer, best_rows, best_values.clamp(min=0), fired / max(tokens, 1),
                        total / fired.clamp(min=1), kept, str(root))


def name_features(model: ClipModel, atlas: FeatureAtlas, bank, batch_size: int = 32) -> FeatureAtlas:
    """Name each feature from `bank` (`banks.TextBank`) by its top images: the mean of their unit embeddings minus
    the mean over all the atlas's images (what its images share that the others do not), matched with the bank's
    texts (centred on their mean, unit): the best text, its property tag and the cosine. Features that fired on no
    image stay unnamed. Embeds every image once (streaming: the mean), then the top images."""
    root = Path(atlas.root)
    total, seen = None, 0
    for start in range(0, atlas.count, batch_size):
        checkpoint()
        units = F.normalize(model.encode_images([root / name for name in atlas.names[start:start + batch_size]])
                            .float().cpu(), dim=-1)
        total = units.sum(dim=0) if total is None else total + units.sum(dim=0)
        seen += len(units)
    mean = total / max(seen, 1)
    wanted = sorted({int(row) for row in atlas.top_rows.flatten().tolist() if row >= 0})
    embedded = {}
    for start in range(0, len(wanted), batch_size):
        rows = wanted[start:start + batch_size]
        checkpoint()
        units = F.normalize(model.encode_images([root / atlas.names[row] for row in rows]).float().cpu(),
                            dim=-1)
        embedded.update(zip(rows, units))
    texts = model.encode_texts(list(bank.texts)).float().cpu()
    texts = F.normalize(texts - texts.mean(dim=0), dim=-1)
    labels = []
    for rows in atlas.top_rows.tolist():
        chosen = [embedded[row] for row in rows if row >= 0]
        if not chosen:
            labels.append(("", "", 0.0))
            continue
        direction = F.normalize(torch.stack(chosen).mean(dim=0) - mean, dim=0)
        scores = texts @ direction
        best = int(scores.argmax())
        labels.append((bank.texts[best], bank.tags[best], round(float(scores[best]), 4)))
    atlas.labels, atlas.bank = labels, bank.name
    return atlas


def describe_features(model: ClipModel, dictionary: Dictionary, images, bank, engine=None,
                      progress: bool = True, batch_size: int = 32) -> FeatureAtlas:
    """The atlas of `dictionary` over the images below `images`, its features named from `bank`."""
    return name_features(model, feature_atlas(model, dictionary, images, batch_size=batch_size, engine=engine,
                                              progress=progress), bank, batch_size)
