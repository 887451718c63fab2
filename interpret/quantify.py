"""How interpretable a model is, with no LLM: how consistently each head sticks to its property, scores per
model, and what removing heads does to zero-shot accuracy.

Our definitions, after CLIP-InterpreT (Madasu et al., arXiv 2409.06579) and the Concept Consistency Score (CCS,
arXiv 2503.11103). Those papers ask ChatGPT for a head's label and an LLM judge for each description; here both
come from the bank's property tags, so the scores are reproducible and work on any model:

- consistency of a head (the CCS analogue, 0..`TOP`): how many of its first `TOP` = 5 TextSpan descriptions carry
  the tag of its property label (`textspan.HeadLabel`: the property whose descriptions explain most of the
  variance the descriptions explain). TextSpan picks a description once, so a property with n < `TOP`
  descriptions in the bank (the toy bank has 4 shapes) caps that count at n: the count is then out of n and
  scaled to 0..`TOP` (rounded half up), so that a head whose descriptions are all of its property, as far as the
  bank allows, is high. With the general bank every property has at least `TOP` descriptions and the count is
  the plain one.
- classes, as the CCS paper's: high = 5, moderate = 3, low <= 1 (2 and 4 count in the distribution only).
- association: the mean consistency over all heads, divided by `TOP` (0..1).
- entanglement: 1 - (distinct properties among the high-consistency heads) / (high-consistency heads): 0 when each
  such head has a property of its own, towards 1 when they all share one (CLIP-InterpreT counts heads per
  property by inspection).

Removing heads, two interventions:
- direct effect (`direct_embeddings`): the heads' direct contributions (summed over tokens, through the
  linearised ln_post; see `decompose`) are taken out of the image embedding. Later layers do not see the change;
  no new forward pass.
- total effect (`ablated_embeddings`): in the forward pass, each head's output (its attention-weighted values,
  before the output projection) is replaced by zero (as the CCS paper) or by its mean over reference images,
  per token (as TextSpan's mean-ablation), so that later layers see the change.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .decompose import ImageDecomposition, decompose_image
from .errors import InterpretError
from .models import ClipModel
from .textspan import HeadAtlas, HeadLabel

TOP = 5
HIGH, MODERATE, LOW = 5, 3, 1
Head = tuple[int, int]


def consistency(label: HeadLabel, top: int = TOP, available: int | None = None) -> int:
    """How many of the head's first `top` descriptions carry the tag of its property label, out of
    `min(top, available)` when the bank has only `available` descriptions of that property, scaled to 0..top."""
    hits = sum(tag == label.property for tag in label.tags[:top])
    reach = top if available is None else max(1, min(top, available))
    return min(top, math.floor(top * hits / reach + 0.5))


@dataclass
class ModelScores:
    """A model's interpretability scores (see the module's docstring). `distribution[c]`: heads of
    consistency c; `high`, `moderate`, `low`: those heads, most confident label first."""

    model: str
    heads: int
    distribution: list[int]
    high: list[Head]
    moderate: list[Head]
    low: list[Head]
    association: float
    entanglement: float
    ranked: list[Head] = field(repr=False, default_factory=list)  # every head, most consistent first
    by_head: dict[Head, int] = field(repr=False, default_factory=dict)

    @property
    def by_consistency(self) -> dict[int, int]:
        """{consistency: heads}, most consistent first (5, 4, ... 0), as the app and the CLI show it;
        `distribution` is the same counts indexed by consistency (0 first)."""
        return {c: self.distribution[c] for c in reversed(range(len(self.distribution)))}


def score_heads(atlas: HeadAtlas, top: int = TOP) -> ModelScores:
    """Consistency of every head of `atlas`, and the model's scores."""
    sizes = atlas.bank_sizes or _sizes_of_bank(atlas.bank)
    by_head = {head: consistency(label, top, sizes.get(label.property)) for head, label in atlas.labels.items()}
    if not by_head:
        raise InterpretError("The head labels hold no heads.")

    def heads_where(test) -> list[Head]:
        chosen = [head for head, value in by_head.items() if test(value)]
        return sorted(chosen, key=lambda head: (-by_head[head], -atlas.labels[head].confidence, head))

    high = heads_where(lambda value: value >= HIGH)
    properties = {atlas.labels[head].property for head in high}
    return ModelScores(
        model=atlas.model, heads=len(by_head),
        distribution=[sum(value == c for value in by_head.values()) for c in range(top + 1)],
        high=high, moderate=heads_where(lambda value: value == MODERATE), low=heads_where(lambda value: value <= LOW),
        association=sum(by_head.values()) / (top * len(by_head)),
        entanglement=1 - len(properties) / len(high) if high else 0.0,
        ranked=heads_where(lambda value: True), by_head=by_head)


def _sizes_of_bank(name: str) -> dict[str, int]:
    """Descriptions per tag of the bank named so, for labels saved before they recorded it ({} if unreadable)."""
    from .banks import bank_named

    try:
        return bank_named(name).tag_counts()
    except InterpretError:
        return {}


# --- removing heads -----------------------------------------------------------------------------------------------

@torch.no_grad()
def direct_embeddings(model: ClipModel, images, heads: Sequence[Head],
                      parts: ImageDecomposition | None = None) -> torch.Tensor:
    """`[B, D]` image embeddings (not normalised) without the heads' direct contributions (`parts`: the images'
    decomposition, when it is at hand)."""
    parts = decompose_image(model, images, spatial=False) if parts is None else parts
    embedding = parts.embedding.clone()
    if heads:
        totals = parts.head_totals()  # [B, L, H, D]
        for layer, head in heads:
            embedding -= totals[:, layer, head]
    return embedding


@torch.no_grad()
def ablated_embeddings(model: ClipModel, images, heads: Sequence[Head], means: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """`[B, D]` image embeddings (not normalised) of a forward pass in which each of `heads` outputs zero, or,
    with `means` `[L, H, T, head_dim]` (`head_means`), its mean."""
    tower = model.tower
    chosen: dict[int, list[int]] = {}
    for layer, head in heads:
        chosen.setdefault(layer, []).append(head)
    x = tower.embed(model.preprocess_images(images))
    for layer in range(tower.layers):
        x, _ = tower.block(layer, x, chosen.get(layer, []), None if means is None else means[layer])
    return tower.embedding(x)


@torch.no_grad()
def head_means(model: ClipModel, images) -> torch.Tensor:
    """`[L, H, T, head_dim]`: every head's output (before the output projection) averaged over `images`."""
    tower = model.tower
    x = tower.embed(model.preprocess_images(images))
    means = []
    for layer in range(tower.layers):
        x, mixed = tower.block(layer, x)
        means.append(mixed.mean(dim=0))
    return torch.stack(means)


def accuracy(embeddings: torch.Tensor, class_texts: torch.Tensor, labels: Sequence[int]) -> float:
    """Zero-shot top-1 accuracy: `embeddings` `[B, D]` against unit `class_texts` `[C, D]`, true `labels`."""
    predicted = (F.normalize(embeddings.float(), dim=-1) @ class_texts.T).argmax(dim=-1)
    return float((predicted.cpu() == torch.as_tensor(list(labels))).float().mean())


def parse_head_list(spec: str, layers: int, heads: int) -> list[Head]:
    """'11.4, 10.*' -> heads: 'L.H' one head, 'L.*' every head of layer L (negative layers count from the end)."""
    from .limits import MAX_SPEC_CHARS, check_text
    from .models import head_index, layer_index

    chosen: list[Head] = []
    for item in check_text(spec, "The heads to remove", MAX_SPEC_CHARS).replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        layer_text, _, head_text = item.partition(".")
        every = head_text.strip() == "*"
        try:
            layer, head = int(layer_text), (0 if every else int(head_text))
        except ValueError:
            raise InterpretError(f"Heads '{item}' not understood: write layer.head (11.4) or layer.* (10.*), "
                                 "separated by commas.") from None
        layer = layer_index(layer, layers, "The model")
        picked = range(heads) if every else [head_index(head, heads, "The model")]
        chosen += [(layer, head) for head in picked if (layer, head) not in chosen]
    return chosen


# --- pruning curves -------------------------------------------------------------------------------------------------

@dataclass
class PruningCurves:
    """Accuracy after removing n heads of each set, for each n of `counts`: `curves[effect][set]` (effect:
    'direct', 'zero', 'mean'; set: 'high' (the n most consistent heads), 'random' (as many layer-matched random
    heads, the mean over `seeds` draws), 'low' (the n least consistent heads))."""

    counts: list[int]
    curves: dict[str, dict[str, list[float]]]
    high: list[Head]
    low: list[Head]
    seeds: int


def layer_matched_random(heads: Sequence[Head], exclude: set[Head], heads_per_layer: int, seed: int) -> list[Head]:
    """For each of `heads`, a random other head of the same layer (none twice, none of `exclude`)."""
    rng = random.Random(seed)
    taken, chosen = set(exclude), []
    for layer, _ in heads:
        free = [(layer, h) for h in range(heads_per_layer) if (layer, h) not in taken]
        if not free:
            continue
        pick = rng.choice(free)
        taken.add(pick)
        chosen.append(pick)
    return chosen


def pruning_curves(model: ClipModel, images, labels: Sequence[int], class_texts: torch.Tensor, scores: ModelScores,
                   counts: Sequence[int], reference=None, seeds: int = 3,
                   effects: Sequence[str] = ("direct", "zero", "mean"),
                   progress: Callable[[float], None] | None = None) -> PruningCurves:
    """Zero-shot accuracy on `images` (true class indices `labels`, unit `class_texts` `[C, D]`) as the n most
    consistent heads, as many layer-matched random heads (`seeds` draws) and the n least consistent heads are
    removed, for each n of `counts` (at most half the heads, so the sets never overlap). The sets rank every
    head by consistency (ties: label confidence), because a model may have few heads of the 'high' class (all 5
    descriptions tagged with the label). `reference`: images for the means of mean-ablation (default: `images`).
    `progress(fraction done)` is called after each count of each effect."""
    high, low = scores.ranked, list(reversed(scores.ranked))
    counts = sorted({min(int(n), len(high) // 2) for n in counts})
    images = model.preprocess_images(images)  # once for every measure
    means = head_means(model, reference if reference is not None else images) if "mean" in effects else None
    parts = decompose_image(model, images, spatial=False) if "direct" in effects else None
    removed = high[:max(counts)]  # the random heads are matched to these, and never among them
    randoms = [layer_matched_random(removed, set(removed), model.geometry.heads, seed) for seed in range(seeds)]
    measured: dict[tuple[str, frozenset], float] = {}  # removing no heads is one measure, not one per set

    def measure(effect: str, heads: list[Head]) -> float:
        key = (effect, frozenset(heads))
        if key not in measured:
            if effect == "direct":
                embeddings = direct_embeddings(model, images, heads, parts)
            else:
                embeddings = ablated_embeddings(model, images, heads, means if effect == "mean" else None)
            measured[key] = accuracy(embeddings, class_texts, labels)
        return measured[key]

    curves = {effect: {"high": [], "random": [], "low": []} for effect in effects}
    for effect in effects:
        for n in counts:
            curves[effect]["high"].append(measure(effect, high[:n]))
            curves[effect]["low"].append(measure(effect, low[:n]))
            curves[effect]["random"].append(sum(measure(effect, chosen[:n]) for chosen in randoms) / seeds)
            if progress is not None:
                progress(sum(len(curve["high"]) for curve in curves.values()) / (len(effects) * len(counts)))
    return PruningCurves(counts, curves, high, low, seeds)
