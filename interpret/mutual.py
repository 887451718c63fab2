"""Mutual knowledge: the concepts CLIP's vision and text sides share when it classifies an image zero-shot
(after Sammani & Deligiannis, NeurIPS 2024).

Given class names and a descriptor set (each class -> short descriptions, e.g. "a red circle" -> "something
red", "a circle"):

1. Zero-shot prediction: softmax over the class prompts of the model's logit scale times the cosine scores.
2. Visual concepts: the image's patches are split into K parts by K-means (cosine, k-means++ seeding, fixed seed)
   on their direct contributions to the image embedding (the spatial decomposition, all heads, summed), so
   patches that push the embedding the same way form a part. A part is embedded either as a visual prompt
   (`method="prompts"`, the default, as in the paper: the image with every other part filled with the image's
   mean colour, through the image encoder; one batched forward pass for all parts) or as the sum of its
   patches' contributions (`method="contributions"`: no extra forward pass, but a part's own sum is a weaker
   description; see benchmarks/toy_mutual.py). Each part is described by the `per_part` descriptors of the pool
   (all classes' descriptors) with the highest cosine to it. The vision side picks these descriptors.
3. Textual concepts: the predicted class's descriptors ranked by the text encoder alone (cosine between each
   descriptor's and the class prompt's embeddings); the text side picks the top `top_text`.
4. Mutual knowledge: `shared` = descriptors both sides pick. The score is the mutual information between the
   two sides' choices over the descriptor pool: for a descriptor d drawn uniformly from the pool, V = [the vision
   side picks d] and T = [the text side picks d] are binary variables, and
   `mutual_information = sum_{v,t in {0,1}} P(v,t) log2(P(v,t) / (P(v) P(t)))` (bits), estimated by counting over
   the pool; `score = mutual_information / min(H(V), H(T))` in [0, 1] (1: both sides pick the same descriptors;
   0: their picks are independent, or one side picks nothing or everything).
5. Deletion curve: the parts that picked a shared concept are removed from the image one at a time, most
   important first (a part's importance: its contribution to the predicted class's cosine score), each removal
   filling its patches with the image's mean colour; the curve is the predicted
   class's probability after 0, 1, 2 ... removals, and `auc` its area with the removals spread evenly over [0, 1]
   (trapezoids; the probability itself when nothing is removed). A low AUC means the shared concepts carry the
   prediction.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .decompose import decompose_image
from .errors import InterpretError
from .images import ImageSource, load_image
from .limits import (MAX_CLASSES, MAX_DESCRIPTOR_BYTES, MAX_DESCRIPTOR_CHARS, MAX_DESCRIPTORS, MAX_PARTS, MAX_POOL,
                     MIN_PARTS, check_file_size, check_number, check_template)
from .models import ClipModel
from .segment import crop_box


@dataclass(frozen=True)
class DescriptorSet:
    """Class names, each with short descriptions; `template` turns a class name into its prompt."""

    descriptors: dict[str, list[str]]
    template: str = "{}"

    @property
    def classes(self) -> list[str]:
        return list(self.descriptors)

    @property
    def pool(self) -> list[str]:
        """Every descriptor once, in order of first appearance."""
        return list(dict.fromkeys(d for values in self.descriptors.values() for d in values))

    def prompts(self) -> list[str]:
        return [self.template.format(name) for name in self.classes]


def descriptor_set(descriptors: dict, classes: list[str] | None = None, template: str = "{}") -> DescriptorSet:
    """Checked descriptor set from a mapping class -> descriptions (and optionally the classes to keep, in order)."""
    template = check_template(template)
    if not isinstance(descriptors, dict) or not descriptors:
        raise InterpretError("Descriptors must map each class name to a list of short descriptions.")
    if len(descriptors) > MAX_CLASSES:
        raise InterpretError(f"The descriptors name {len(descriptors):,} classes; the limit is {MAX_CLASSES:,}.")
    classes = list(descriptors) if classes is None else [c.strip() for c in classes if c and c.strip()]
    if len(classes) < 2:
        raise InterpretError("Give at least two classes to choose between.")
    if len(classes) > MAX_CLASSES:
        raise InterpretError(f"{len(classes):,} classes; the limit is {MAX_CLASSES:,}.")
    missing = [name for name in classes if name not in descriptors]
    if missing:
        raise InterpretError(f"No descriptors for the class(es) {', '.join(_short(m) for m in missing[:5])}.")
    checked = {}
    for name in classes:
        values = descriptors[name]
        if len(name) > MAX_DESCRIPTOR_CHARS:
            raise InterpretError(f"The class name {_short(name)} is {len(name):,} characters long; the limit is "
                                 f"{MAX_DESCRIPTOR_CHARS}.")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise InterpretError(f"The descriptors of {_short(name)} must be a non-empty list of texts.")
        if len(values) > MAX_DESCRIPTORS:
            raise InterpretError(f"The class {_short(name)} has {len(values):,} descriptors; the limit is "
                                 f"{MAX_DESCRIPTORS} a class.")
        longest = max(values, key=len)
        if len(longest) > MAX_DESCRIPTOR_CHARS:
            raise InterpretError(f"A descriptor of {_short(name)} is {len(longest):,} characters long; the limit is "
                                 f"{MAX_DESCRIPTOR_CHARS}.")
        checked[name] = [v.strip() for v in values]
    result = DescriptorSet(checked, template)
    if len(result.pool) > MAX_POOL:
        raise InterpretError(f"The classes have {len(result.pool):,} distinct descriptors; the limit is {MAX_POOL:,}.")
    return result


def _short(text: str, width: int = 40) -> str:
    """A user's text quoted for a message, cut to `width` characters."""
    return repr(text if len(text) <= width else text[:width] + "...")


def _read_text(path: str | Path, what: str) -> str:
    """The text of a file the user named; a message naming `what` when it is missing or unreadable (decoding
    errors propagate, for the caller's message)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InterpretError(f"No {what} at {path}.") from None
    except OSError as error:
        raise InterpretError(f"Could not read the {what} {path} ({error}).") from None


def load_descriptors(path: str | Path, classes: list[str] | None = None, template: str = "{}") -> DescriptorSet:
    """A JSON file `{"class": ["description", ...], ...}` (optionally restricted to `classes`), at most
    `limits.MAX_DESCRIPTOR_BYTES`; the template is checked before the file is read."""
    check_template(template)
    check_file_size(path, MAX_DESCRIPTOR_BYTES, "descriptor file")
    try:
        data = json.loads(_read_text(path, "descriptor file"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InterpretError(f"The descriptor file is not a JSON file of class -> descriptions ({error}).") from None
    except RecursionError:
        raise InterpretError("The descriptor file is nested too deeply: it must be one object of class -> list of "
                             "descriptions.") from None
    return descriptor_set(data, classes, template)


def load_classes(path: str | Path) -> list[str]:
    """A text file, one class name a line."""
    try:
        lines = _read_text(path, "class file").splitlines()
    except UnicodeDecodeError:
        raise InterpretError(f"{path} is not a text file of class names.") from None
    return [line.strip() for line in lines if line.strip()]


@dataclass
class MutualKnowledge:
    """What the vision and text sides agree on for one image.

    classes, probabilities `[C]`: the zero-shot distribution; predicted: the top class.
    parts: `[grid_h, grid_w]` the part (0..K-1) of every patch; part_weights `[K]`: each part's contribution to
        the predicted class's cosine score; part_concepts: each part's descriptors (vision side), best first.
    visual, textual, shared: the descriptors the vision side, the text side and both pick.
    mutual_information (bits) and score (normalised, 0..1): see the module's docstring.
    deletion: the predicted class's probability after removing 0, 1, ... parts of shared concepts, in the order
        of `deleted_parts`; auc: its area. picture and box: the image and the part of it the model saw.
    """

    classes: list[str]
    probabilities: torch.Tensor
    predicted: str
    parts: torch.Tensor
    part_weights: torch.Tensor
    part_concepts: list[list[str]]
    visual: list[str]
    textual: list[str]
    shared: list[str]
    mutual_information: float
    score: float
    deletion: list[float]
    deleted_parts: list[int]
    auc: float
    picture: Image.Image
    box: tuple[int, int, int, int]
    warnings: list[str] = field(default_factory=list)

    @property
    def probability(self) -> float:
        return float(self.probabilities.max())


def kmeans(points: torch.Tensor, clusters: int, iterations: int = 30, seed: int = 0) -> torch.Tensor:
    """`[N, D]` rows (compared by cosine) -> `[N]` cluster ids in 0..clusters-1 (k-means++ seeding)."""
    points = F.normalize(points.float(), dim=-1)
    generator = torch.Generator().manual_seed(seed)
    clusters = min(clusters, points.shape[0])
    centres = points[torch.randint(points.shape[0], (1,), generator=generator)]
    while centres.shape[0] < clusters:
        distance = (1 - points @ centres.T).min(dim=1).values.clamp(min=0)
        if float(distance.sum()) <= 0:
            break
        centres = torch.cat([centres, points[torch.multinomial(distance, 1, generator=generator)]])
    for _ in range(iterations):
        labels = (points @ centres.T).argmax(dim=1)
        updated = torch.stack([F.normalize(points[labels == c].sum(0), dim=0) if (labels == c).any() else centres[c]
                               for c in range(centres.shape[0])])
        if torch.allclose(updated, centres):
            break
        centres = updated
    labels = (points @ centres.T).argmax(dim=1)
    return torch.unique(labels, return_inverse=True)[1]  # ids 0..K'-1 without gaps


def binary_mutual_information(first: torch.Tensor, second: torch.Tensor) -> tuple[float, float]:
    """Mutual information (bits) of two 0/1 variables observed together `[N]` each, and its normalised form
    `I / min(H(first), H(second))` (0 when either is constant)."""
    first, second = first.bool(), second.bool()
    count = first.numel()
    information = 0.0
    for a in (False, True):
        for b in (False, True):
            joint = float(((first == a) & (second == b)).sum()) / count
            if joint > 0:
                information += joint * math.log2(joint / (float((first == a).sum()) / count
                                                          * float((second == b).sum()) / count))

    def entropy(values: torch.Tensor) -> float:
        p = float(values.sum()) / count
        return -sum(q * math.log2(q) for q in (p, 1 - p) if q > 0)

    smallest = min(entropy(first), entropy(second))
    return information, (information / smallest if smallest > 0 else 0.0)


@torch.no_grad()
def _probabilities(model: ClipModel, images: torch.Tensor, class_texts: torch.Tensor) -> torch.Tensor:
    """`[B, C]` zero-shot probabilities of image embeddings `[B, D]` (normalised here)."""
    images = F.normalize(images.float(), dim=-1)
    return torch.softmax(model.model.logit_scale.exp().float() * images @ class_texts.T, dim=-1)


def remove_parts(model: ClipModel, batch: torch.Tensor, parts: torch.Tensor, removed: list[int]) -> torch.Tensor:
    """A copy of the preprocessed image `[1, 3, H, W]` whose patches in the `removed` parts are filled with the
    image's mean colour (a neutral fill that adds no new colour)."""
    patch_h, patch_w = model.geometry.patch_size
    mask = torch.isin(parts, torch.tensor(removed, dtype=parts.dtype)).float()  # [gh, gw]
    pixels = mask.repeat_interleave(patch_h, 0).repeat_interleave(patch_w, 1).to(batch)  # [H, W]
    return batch * (1 - pixels) + batch.mean(dim=(-2, -1), keepdim=True) * pixels


def deletion_probabilities(model: ClipModel, batch: torch.Tensor, parts: torch.Tensor, order: list[int],
                           class_texts: torch.Tensor, target: int, cumulative: bool = True) -> list[float]:
    """The target class's probability with parts removed one after another (`cumulative`) or one at a time."""
    variants = [remove_parts(model, batch, parts, order[: i + 1] if cumulative else [part])
                for i, part in enumerate(order)]
    if not variants:
        return []
    return _probabilities(model, model.encode_images(torch.cat(variants)), class_texts)[:, target].tolist()


METHODS = ("prompts", "contributions")


def mutual_knowledge(model: ClipModel, image: ImageSource, descriptors: DescriptorSet | dict, parts: int = 3,
                     per_part: int = 2, top_text: int = 3, method: str = "prompts") -> MutualKnowledge:
    """Explain the zero-shot prediction of `image` among `descriptors.classes` by the concepts both encoders
    pick (see the module's docstring). `parts`: K; `per_part`: descriptors per part; `top_text`: descriptors the
    text side picks; `method`: how a part is embedded, 'prompts' or 'contributions'."""
    if method not in METHODS:
        raise InterpretError(f"Unknown method '{method}': use one of {', '.join(METHODS)}.")
    if not isinstance(descriptors, DescriptorSet):
        descriptors = descriptor_set(descriptors)
    parts = check_number(parts, "Parts", MIN_PARTS, MAX_PARTS, integer=True)
    picture = load_image(image)
    batch = model.preprocess_images([picture])
    encoded = model.tokenize(descriptors.prompts())
    class_texts = model.embed_tokens(encoded)  # [C, D]
    pool = descriptors.pool
    pool_texts = model.encode_texts(pool)  # [M, D]

    decomposition = decompose_image(model, batch, spatial=True)
    probabilities = _probabilities(model, decomposition.embedding, class_texts)[0]
    target = int(probabilities.argmax())
    predicted = descriptors.classes[target]

    contributions = decomposition.token_totals()[0, 1:]  # [P, D]: patches only
    rows, columns = model.geometry.grid
    labels = kmeans(contributions, parts)
    count = int(labels.max()) + 1
    grid = labels.reshape(rows, columns)
    part_vectors = torch.zeros(count, contributions.shape[1]).index_add_(0, labels, contributions)  # [K, D]
    weights = part_vectors @ class_texts[target] / decomposition.embedding[0].norm()
    if method == "prompts":  # each part alone on the image's mean colour, embedded by the image encoder
        others = [[j for j in range(count) if j != k] for k in range(count)]
        part_vectors = model.encode_images(torch.cat([remove_parts(model, batch, grid, rest) for rest in others]))
    similarity = F.normalize(part_vectors, dim=-1) @ pool_texts.T  # [K, M]
    chosen = similarity.topk(min(per_part, len(pool)), dim=1).indices
    part_concepts = [[pool[i] for i in row] for row in chosen.tolist()]
    visual = list(dict.fromkeys(d for concepts in part_concepts for d in concepts))

    own = descriptors.descriptors[predicted]
    ranking = (pool_texts[[pool.index(d) for d in own]] @ class_texts[target]).argsort(descending=True)
    textual = [own[i] for i in ranking[: max(1, top_text)].tolist()]
    shared = [d for d in visual if d in textual]
    picked_by_vision = torch.tensor([d in visual for d in pool])
    picked_by_text = torch.tensor([d in textual for d in pool])
    information, score = binary_mutual_information(picked_by_vision, picked_by_text)

    order = []
    for concept in sorted(shared, key=lambda d: -max(float(weights[k]) for k in range(count)
                                                      if d in part_concepts[k])):
        order += sorted((k for k in range(count) if concept in part_concepts[k] and k not in order),
                        key=lambda k: -float(weights[k]))
    deletion = [float(probabilities[target])] + deletion_probabilities(model, batch, grid, order, class_texts, target)
    return MutualKnowledge(
        classes=descriptors.classes, probabilities=probabilities.cpu(), predicted=predicted, parts=grid.cpu(),
        part_weights=weights, part_concepts=part_concepts, visual=visual, textual=textual, shared=shared,
        mutual_information=information, score=score, deletion=deletion, deleted_parts=order,
        auc=deletion_area(deletion), picture=picture, box=crop_box(model, picture.size), warnings=encoded.warnings())


def deletion_area(curve: list[float]) -> float:
    """Area under a curve sampled at evenly spaced points of [0, 1] (trapezoids); a single point: its value."""
    if len(curve) == 1:
        return float(curve[0])
    return float(sum((a + b) / 2 for a, b in zip(curve, curve[1:])) / (len(curve) - 1))
