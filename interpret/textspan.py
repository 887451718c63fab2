"""TextSpan (Gandelsman, Efros, Steinhardt, ICLR 2024): describe a head by the texts that span its outputs.

For one head's direct contributions over N images `[N, D]` and a bank of M text embeddings `[M, D]`:
1. project the texts onto the span of the head's top-`rank` right singular vectors (of the raw outputs, as in
   the authors' code), and centre the outputs (their mean is kept for reconstruction);
2. k greedy rounds: pick the text `t` along which the outputs vary most, `var(X t)` with `t` as it stands (no
   renormalisation, as in the authors' code), then remove its direction from the outputs and from every
   remaining text.

Everything is done on the D x D covariance of the outputs: the variance along a deflated text `t'` is
`t'^T C t'` (deflating the outputs by `t'` does not change it for texts orthogonal to `t'`), so a round costs
M x D x D no matter how many images there are.
"""
from __future__ import annotations

import json
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .banks import TextBank
from .decompose import decompose_image, normalise_layers
from .errors import InterpretError
from .integrity import write_json_atomic
from .jobs import JobBar
from .models import ClipModel


@dataclass
class TextSpanResult:
    """indices `[k]`: chosen texts, in order; explained `[k]`: share of the head's variance (total variance of
    its centred outputs) explained by the first i+1 chosen directions; mean `[D]`: the outputs' mean;
    directions `[k, D]`: the chosen texts as they were when chosen (projected and deflated)."""

    indices: torch.Tensor
    explained: torch.Tensor
    mean: torch.Tensor
    directions: torch.Tensor

    def reconstruct(self, outputs: torch.Tensor) -> torch.Tensor:
        """`[N, D]`: the outputs' mean plus their projection on the chosen (mutually orthogonal) directions."""
        centred = outputs.to(self.directions) - self.mean
        units = self.directions / self.directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return self.mean + (centred @ units.T) @ units


def textspan(head_outputs: torch.Tensor, texts: torch.Tensor, k: int = 20, rank: int = 80) -> TextSpanResult:
    """Greedy TextSpan of one head: outputs `[N, D]`, text embeddings `[M, D]` -> `TextSpanResult`."""
    outputs = head_outputs.double()
    bank = texts.to(outputs)
    if outputs.dim() != 2 or bank.dim() != 2 or outputs.shape[1] != bank.shape[1]:
        raise ValueError(f"Expected outputs [N, D] and texts [M, D], got {list(head_outputs.shape)} and "
                         f"{list(texts.shape)}.")
    k = min(k, bank.shape[0])
    _, _, right = torch.linalg.svd(outputs, full_matrices=False)
    basis = right[:rank]  # [r, D], orthonormal rows (r <= rank, and <= the number of outputs)
    mean = outputs.mean(dim=0)
    centred = outputs - mean
    total = (centred * centred).sum().clamp_min(1e-30) / max(outputs.shape[0] - 1, 1)  # trace of the covariance
    # Everything below happens in the r coordinates of the basis (the texts are projected on it, and every direction
    # chosen lies in it): the same numbers as in D dimensions, (D / r)^2 times fewer multiply-adds.
    bank = bank @ basis.T  # [M, r]
    coordinates = centred @ basis.T  # [N, r]
    covariance = coordinates.T @ coordinates / max(outputs.shape[0] - 1, 1)  # [r, r]

    chosen, explained, directions = [], [], []
    removed = outputs.new_zeros(())
    for _ in range(k):
        variance = ((bank @ covariance) * bank).sum(dim=-1)  # [M]: var(X t) for every text t
        if chosen:
            variance[torch.tensor(chosen)] = -1.0  # a chosen text is zero now; never pick it twice
        best = int(torch.argmax(variance))
        if variance[best] <= 1e-12 * total:  # the texts' span is used up (k > rank): stop early
            break
        direction = bank[best].clone()
        squared = direction @ direction
        chosen.append(best)
        directions.append(direction @ basis)  # back in the D dimensions of the outputs
        removed = removed + (direction @ covariance @ direction) / squared
        bank = bank - torch.outer(bank @ direction / squared, direction)
        explained.append(float(removed / total))
    return TextSpanResult(
        indices=torch.tensor(chosen, dtype=torch.long),
        explained=torch.tensor(explained, dtype=torch.float32),
        mean=mean.float(),
        directions=torch.stack(directions).float() if directions else outputs.new_zeros(0, outputs.shape[1]).float(),
    )


@dataclass
class HeadLabel:
    """What one head is about: its TextSpan descriptions (in the order chosen), the variance each one adds
    (`gains`, shares of the head's variance), the total explained, and a property label with its confidence:
    the share of the explained variance carried by descriptions tagged with that property."""

    layer: int
    head: int
    descriptions: list[str]
    tags: list[str]
    gains: list[float]
    explained: float
    property: str
    confidence: float


def label_head(layer: int, head: int, result: TextSpanResult, texts, tags) -> HeadLabel:
    """Turn a head's TextSpan result into a `HeadLabel`, voting with the tags of its descriptions weighted by
    the variance each explains (untagged descriptions do not vote)."""
    explained = result.explained.tolist()
    gains = [after - before for before, after in zip([0.0] + explained[:-1], explained)]
    chosen_tags = [tags[i] for i in result.indices.tolist()]
    votes: dict[str, float] = {}
    for tag, gain in zip(chosen_tags, gains):
        if tag != "untagged":
            votes[tag] = votes.get(tag, 0.0) + gain
    best = max(votes, key=votes.get) if votes else "untagged"
    total = sum(votes.values())
    return HeadLabel(
        layer=layer,
        head=head,
        descriptions=[texts[i] for i in result.indices.tolist()],
        tags=chosen_tags,
        gains=gains,
        explained=explained[-1] if explained else 0.0,
        property=best,
        confidence=votes.get(best, 0.0) / total if total > 0 else 0.0,
    )


@dataclass
class HeadAtlas:
    """Labels of every described head of one model, and how they were made."""

    model: str
    bank: str
    k: int
    rank: int
    images: int
    labels: dict[tuple[int, int], HeadLabel]
    weights: str = ""  # SHA-256 of the model's weights (`ClipModel.weights_hash`): labels go with exact weights
    bank_sizes: dict[str, int] = field(default_factory=dict)  # descriptions per tag in the bank (`TextBank.tag_counts`)

    def get(self, layer: int, head: int) -> HeadLabel:
        if (layer, head) not in self.labels:
            raise InterpretError(f"Head {layer}.{head} has no description (described layers: "
                                 f"{sorted({l for l, _ in self.labels})}).")
        return self.labels[layer, head]

    def property_grid(self, layers: int, heads: int) -> list[list[str]]:
        """`[L][H]` property names ('' where a head was not described)."""
        return [[self.labels[(l, h)].property if (l, h) in self.labels else "" for h in range(heads)]
                for l in range(layers)]

    def heads_with(self, prop: str) -> list[tuple[int, int]]:
        return sorted(key for key, label in self.labels.items() if label.property == prop)

    def signature(self) -> dict:
        return {"model": self.model, "bank": self.bank, "k": self.k, "rank": self.rank, "images": self.images,
                "weights": self.weights}

    def save(self, path: Path) -> None:
        payload = {**self.signature(), "bank_sizes": self.bank_sizes,
                   "labels": [asdict(label) for label in self.labels.values()]}
        write_json_atomic(path, payload)

    @classmethod
    def load(cls, path: Path) -> "HeadAtlas":
        try:
            payload = json.loads(Path(path).read_text())
            labels = {(item["layer"], item["head"]): HeadLabel(**item) for item in payload["labels"]}
            return cls(payload["model"], payload["bank"], payload["k"], payload["rank"], payload["images"], labels,
                       payload.get("weights", ""), dict(payload.get("bank_sizes", {})))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InterpretError(f"Could not read head labels from {path}: {error}") from None


@torch.no_grad()
def collect_head_outputs(model: ClipModel, images: Sequence, layers=None, batch_size: int = 32,
                         progress: bool = True) -> torch.Tensor:
    """`[N, L', H, D]`: every head's direct contribution (summed over tokens) for each image."""
    outputs = []
    for start in JobBar(range(0, len(images), batch_size), desc="decomposing images", unit="batch",
                      disable=not progress):
        decomposition = decompose_image(model, images[start:start + batch_size], layers=layers, spatial=False)
        outputs.append(decomposition.head_totals())
    return torch.cat(outputs)


def describe_heads(model: ClipModel, images: Sequence, bank: TextBank, k: int = 20, rank: int = 80,
                   layers=None, out_path: Path | None = None, progress: bool = True, engine=None,
                   batch_size: int = 32) -> HeadAtlas:
    """TextSpan every head of `layers` (default: all) over `images` with `bank`, and label it.

    With `out_path`, the atlas is written after each layer and a rerun with the same settings resumes where
    the previous one stopped. With `engine` (`engines.make_engine`; `images` then are file paths), the images are
    decomposed there; the labels are the same."""
    wanted = normalise_layers(layers, model.geometry.layers, model.label)
    atlas = HeadAtlas(model.label, bank.name, k, rank, len(images), {}, model.weights_hash, bank.tag_counts())
    if out_path is not None and Path(out_path).is_file():
        try:
            previous = HeadAtlas.load(out_path)
            if previous.signature() == atlas.signature():
                previous.bank_sizes = atlas.bank_sizes
                atlas = previous
        except InterpretError:
            pass  # unreadable: start again
    todo = [layer for layer in wanted if any((layer, h) not in atlas.labels for h in range(model.geometry.heads))]
    if not todo:
        return atlas
    texts = torch.cat([model.encode_texts(list(bank.texts[i:i + 256]))
                       for i in JobBar(range(0, len(bank), 256), desc=f"the {bank.name} bank's texts", unit="batch",
                                     disable=not progress)])  # a progress bar from the start (seconds on a ViT)
    if engine is None:
        outputs = collect_head_outputs(model, images, layers=todo, batch_size=batch_size,
                                       progress=progress)  # [N, L', H, D]
    else:
        outputs = _head_outputs_on(engine, model, images, todo, progress, batch_size)
    bar = JobBar(total=len(todo) * model.geometry.heads, desc="TextSpan", unit="head", disable=not progress)
    for position, layer in enumerate(todo):
        for head in range(model.geometry.heads):
            result = textspan(outputs[:, position, head], texts, k=k, rank=rank)
            atlas.labels[layer, head] = label_head(layer, head, result, bank.texts, bank.tags)
            bar.update()
        if out_path is not None:
            atlas.save(out_path)
    bar.close()
    return atlas


def _head_outputs_on(engine, model: ClipModel, paths: Sequence, layers: Sequence[int], progress: bool,
                     batch_size: int = 32) -> torch.Tensor:
    """`[N, L', H, D]` float32, as `collect_head_outputs` (the same batches), computed on `engine`."""
    from .engines import HeadsTask, run_blocks

    names = [str(Path(path).resolve()) for path in paths]
    blocks = list(run_blocks(engine, model, Path("/"), names, HeadsTask(tuple(layers), "float32"), batch_size,
                             8 * batch_size, progress=progress, description="decomposing images"))
    skipped = [item for block in blocks for item in block.skipped]
    if skipped:
        raise InterpretError(f"{len(skipped)} image(s) could not be read, e.g. {skipped[0][0]}: {skipped[0][1]}")
    return torch.from_numpy(np.concatenate([block.arrays["heads"] for block in blocks]))


class _CallableModule(types.ModuleType):
    """`interpret.textspan` is this module and, called, the function `textspan`: `interpret.textspan(outputs,
    texts, k=20)` as well as `from interpret.textspan import describe_heads`."""

    def __call__(self, head_outputs: torch.Tensor, texts: torch.Tensor, k: int = 20, rank: int = 80) -> TextSpanResult:
        return textspan(head_outputs, texts, k=k, rank=rank)


sys.modules[__name__].__class__ = _CallableModule
