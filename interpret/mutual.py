"""Mutual knowledge: the concepts CLIP's vision and language sides share when it classifies an image zero-shot,
with the protocol of Sammani & Deligiannis (NeurIPS 2024).

Given class names and a descriptor set (each class -> short descriptions; any number per class, synonyms, a
pool shared by the classes):

1. Zero-shot prediction: softmax over the class prompts of the model's logit scale times the cosine scores.
2. Visual concepts: the prominent patches are one side of the Fiedler vector of the last layer's key affinity
   (cosines of the keys, negatives set to 0; the side that touches the border less), and K-means (cosine) over
   those patches' keys gives L = 5 concepts (over the images of a class for `class_mutual_knowledge`).
3. Each concept is embedded by visual prompts: a thin red ellipse around it (its second moments), the same on a
   greyscale image with the concept in colour, and on a blurred image with the concept sharp; the three image
   embeddings are averaged. (White on the toy model, whose world has red objects: `default_marker`.)
4. Matching: the descriptors above the 80th percentile of a concept's similarities are candidates; optimal
   transport (Sinkhorn-Knopp, tau = 1, on 2.5 x the cosines) spreads them over the concepts; each concept keeps
   its 3 best. These form the vision side.
5. Language side: the u descriptors of the pool closest to the predicted class's prompt (text encoder only); u
   is as many as a class has on average, at most 5 (`language_size`).
6. Mutual information (bits): from the contingency table of the two sides (`contingency_information`):
   `H(D_v) + H(D_y) - H(D_v, D_y)`. It counts how many distinct concepts the sides share, in bits: n concepts
   shared once each give log2(n); one shared concept gives 0 (the sides agree, but there is nothing to tell
   apart). MI dynamics: the concepts are removed one at a time, most important first (importance: the predicted
   class's probability drop when the concept alone is blurred), the MI recomputed after each; `mi_auc` is the
   mean of that curve: higher when the shared knowledge is spread over several concepts.
7. Deletion and insertion: the predicted class's probability as the concepts are blurred one after another
   (deletion; a low area means the concepts carry the prediction) or un-blurred on a blurred image (insertion;
   a high area means they suffice).

Where this differs from the paper: concepts by K-means only (the paper also uses PCA); the ellipse from the
region's moments instead of OpenCV's fit of its contour; no CRF; the paper's reported MI values (about 7.5 on
ImageNet) come from the authors' code, which adds the table's entropy to log N + log M instead of taking the
mutual information, so they are not on this scale.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

from .errors import InterpretError
from .images import ImageSource, load_image
from .limits import (MAX_CLASSES, MAX_DESCRIPTOR_BYTES, MAX_DESCRIPTOR_CHARS, MAX_DESCRIPTORS, MAX_PARTS, MAX_POOL,
                     MIN_PARTS, check_file_size, check_number, check_template)
from .models import ClipModel, is_toy
from .segment import crop_box
from .towers import side_by_side


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
        data = json.loads(_read_text(path, "descriptor file"), object_pairs_hook=_without_repeats)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InterpretError(f"The descriptor file is not a JSON file of class -> descriptions ({error}).") from None
    except RecursionError:
        raise InterpretError("The descriptor file is nested too deeply: it must be one object of class -> list of "
                             "descriptions.") from None
    return descriptor_set(data, classes, template)


def _without_repeats(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different (json keeps the last of a repeated class without a word)."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise InterpretError(f"The descriptor file names the class {key[:MAX_DESCRIPTOR_CHARS]!r} twice: give "
                                 "each class once, with all its descriptors in one list.")
        seen.add(key)
    return dict(pairs)


def load_classes(path: str | Path) -> list[str]:
    """A text file, one class name a line."""
    try:
        lines = _read_text(path, "class file").splitlines()
    except UnicodeDecodeError:
        raise InterpretError(f"{path} is not a text file of class names.") from None
    return [line.strip() for line in lines if line.strip()]


# --- the paper's protocol ----------------------------------------------------------------------------------------

CONCEPTS = 5  # L, visual concepts
PER_CONCEPT = 3  # descriptors each visual concept keeps after matching
TOP_TEXT = 5  # u, descriptors of the language side at most (fewer where classes have fewer: `language_size`)
PERCENTILE = 80.0  # a descriptor is a candidate when above this percentile of a concept's similarities
SINKHORN_TAU = 1.0
LOGIT_SCALE = 2.5  # cosine similarities are scaled by this before the transport (as the authors' code)
BLUR_FRACTION = 8  # deletion and insertion blur with a radius of the input's side / 8: a concept's content goes


@dataclass
class MutualKnowledge:
    """What the vision and language sides agree on for one image (or one class: `class_mutual_knowledge`).

    classes, probabilities `[C]`: the zero-shot distribution; predicted: the top class.
    parts: `[grid_h, grid_w]` the visual concept (0..L-1) of every patch, -1 where the patch is not prominent;
        importance `[L]`: how much the predicted class's probability drops when that concept alone is blurred;
        part_concepts: each concept's descriptors after matching (the vision side), in concept order.
    visual, textual, shared: the descriptors of the vision side (every concept's, once each), of the language
        side (the predicted class's top descriptors by text similarity) and of both.
    mutual_information: bits, from the contingency table of the two sides (see `contingency_information`);
        mi_curve: the same after removing the concepts one at a time, most important first; mi_auc its mean.
    deletion / insertion: the predicted class's probability as the concepts are blurred (deletion) or un-blurred
        from a blurred image (insertion), most important first; deletion_auc / insertion_auc their areas.
    picture and box: the image and the part of it the model saw.
    """

    classes: list[str]
    probabilities: torch.Tensor
    predicted: str
    parts: torch.Tensor
    importance: list[float]
    part_concepts: list[list[str]]
    visual: list[str]
    textual: list[str]
    shared: list[str]
    mutual_information: float
    mi_curve: list[float]
    mi_auc: float
    deletion: list[float]
    insertion: list[float]
    deletion_auc: float
    insertion_auc: float
    picture: Image.Image | None
    box: tuple[int, int, int, int]
    warnings: list[str] = field(default_factory=list)

    @property
    def probability(self) -> float:
        return float(self.probabilities.max())

    @property
    def order(self) -> list[int]:
        """The concepts, most important first: the order of the curves."""
        return by_importance(self.importance)


def by_importance(importance: list[float]) -> list[int]:
    """Concept indices, the largest probability drop first (ties: the lower index)."""
    return sorted(range(len(importance)), key=lambda k: -importance[k])


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


@torch.no_grad()
def last_layer_keys(model: ClipModel, batch: torch.Tensor) -> torch.Tensor:
    """`[B, P, width]`: the keys of the last block's attention for every patch (prefix tokens left out), its
    heads' keys side by side."""
    tower = model.tower
    x = tower.forward(batch, blocks=tower.layers - 1)
    _, keys, _ = tower.qkv(tower.layers - 1, x)  # [B, H, T, head_dim]
    return side_by_side(keys)[:, tower.prefix:]


def prominent_patches(keys: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """`[P]` bool: the prominent patches of one image from its last-layer keys `[P, width]`: the sign of the
    Fiedler vector of the key affinity (positive cosines), the side that touches the image's border less (ties:
    the smaller side)."""
    unit = F.normalize(keys.double(), dim=-1)
    affinity = (unit @ unit.T).clamp(min=0)
    degree = affinity.sum(dim=1)
    scale = degree.rsqrt()
    laplacian = torch.eye(len(degree), dtype=affinity.dtype) - scale[:, None] * affinity * scale[None, :]
    _, vectors = torch.linalg.eigh(laplacian)
    fiedler = vectors[:, 1] * scale  # the random-walk form: constant on a connected affinity's first vector
    fiedler = fiedler - (fiedler * degree).sum() / degree.sum()  # 0 already when connected; else splits the parts
    rows, columns = grid
    border = torch.zeros(rows, columns, dtype=torch.bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    border = border.flatten()
    sides = [fiedler > 0, fiedler <= 0]
    sides = [side for side in sides if side.any()] or [torch.ones_like(border)]
    return min(sides, key=lambda side: (float(side[border].float().mean()) if side[border].any() else 0.0,
                                        int(side.sum())))


def visual_concepts(keys: torch.Tensor, foreground: torch.Tensor, count: int = CONCEPTS, seed: int = 0
                    ) -> torch.Tensor:
    """`[N]` concept ids (-1 for patches that are not prominent): K-means (cosine) over the prominent patches'
    keys `[N, width]` (`foreground` `[N]` bool), at most `count` concepts."""
    labels = torch.full((len(keys),), -1, dtype=torch.long)
    labels[foreground] = kmeans(keys[foreground], count, seed=seed)
    return labels


def sinkhorn(scores: torch.Tensor, tau: float = SINKHORN_TAU, iterations: int = 1000) -> torch.Tensor:
    """Sinkhorn-Knopp: the entropic transport plan `[L, M]` of similarity `scores` `[L, M]` at temperature `tau`
    (rows and columns normalised in turn)."""
    plan = torch.exp((scores.double() - scores.max()) / tau)
    for _ in range(iterations):
        plan = plan / plan.sum(dim=1, keepdim=True)
        plan = plan / plan.sum(dim=0, keepdim=True)
    return plan.float()


def match_descriptors(concepts: torch.Tensor, pool_texts: torch.Tensor, per_concept: int = PER_CONCEPT,
                      percentile: float = PERCENTILE, tau: float = SINKHORN_TAU) -> list[list[int]]:
    """Descriptors (pool indices, best first) for each concept embedding `[L, D]` among unit `pool_texts`
    `[M, D]`: the candidates are the descriptors above the `percentile`-th percentile of at least one concept's
    similarities; optimal transport (Sinkhorn, `tau`) spreads them over the concepts; each concept keeps its
    `per_concept` best by transported mass."""
    similarity = F.normalize(concepts.float(), dim=-1) @ pool_texts.T  # [L, M]
    threshold = torch.quantile(similarity, percentile / 100, dim=1, keepdim=True)
    candidates = torch.nonzero((similarity >= threshold).any(dim=0)).flatten()
    if len(candidates) < per_concept:
        candidates = similarity.max(dim=0).values.topk(min(per_concept, similarity.shape[1])).indices
    plan = sinkhorn(LOGIT_SCALE * similarity[:, candidates], tau)
    best = plan.topk(min(per_concept, len(candidates)), dim=1).indices
    return [[int(candidates[i]) for i in row] for row in best.tolist()]


def contingency_information(vision: list[str], language: list[str]) -> float:
    """Mutual information (bits) of the two sides' concepts: the table `T[i, j]` = 1 where the i-th vision
    descriptor is the j-th language descriptor, normalised to a joint distribution; `H(D_v) + H(D_y) - H(D_v, D_y)`
    of it. 0 when nothing is shared, and also when one concept is (knowing the vision concept then tells nothing
    more about the language one); log2(n) when n distinct descriptors are shared once each."""
    table = torch.tensor([[float(v == y) for y in language] for v in vision]) if vision and language else \
        torch.zeros(1, 1)
    total = float(table.sum())
    if total == 0:
        return 0.0
    joint = table / total

    def entropy(p: torch.Tensor) -> float:
        p = p[p > 0]
        return float(-(p * torch.log2(p)).sum())

    return max(0.0, entropy(joint.sum(dim=1)) + entropy(joint.sum(dim=0)) - entropy(joint.flatten()))


def mi_dynamics(part_concepts: list[list[str]], order: list[int], language: list[str]) -> list[float]:
    """The mutual information with all concepts, then after removing concepts `order[0]`, `order[1]`, ... (their
    descriptors leave the vision side)."""
    curve, removed = [], set()
    for step in range(len(order) + 1):
        vision = [d for k, concepts in enumerate(part_concepts) if k not in removed for d in concepts]
        curve.append(contingency_information(vision, language))
        if step < len(order):
            removed.add(order[step])
    return curve


def deletion_area(curve: list[float]) -> float:
    """Area under a curve sampled at evenly spaced points of [0, 1] (trapezoids); a single point: its value."""
    if len(curve) == 1:
        return float(curve[0])
    return float(sum((a + b) / 2 for a, b in zip(curve, curve[1:])) / (len(curve) - 1))


# --- visual prompts ----------------------------------------------------------------------------------------------

def model_view(model: ClipModel, picture: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The part of `picture` the model sees, at the model's input size, and that part's box in the picture."""
    box = crop_box(model, picture.size)
    height, width = model.geometry.image_size
    return picture.crop(box).resize((width, height), Image.BICUBIC), box


def concept_mask(model: ClipModel, parts: torch.Tensor, concept: int) -> np.ndarray:
    """`[H, W]` bool: the pixels of a concept's patches on the model's input."""
    patch_h, patch_w = model.geometry.patch_size
    inside = (parts == concept).numpy()
    return inside.repeat(patch_h, axis=0).repeat(patch_w, axis=1)


def ellipse_points(mask: np.ndarray, minimum: float) -> list[tuple[float, float]]:
    """The outline (64 points) of the ellipse of a region's second moments, two standard deviations wide (a disk's
    own outline), at least `minimum` pixels across."""
    rows, columns = np.nonzero(mask)
    centre = np.array([columns.mean(), rows.mean()])
    covariance = np.cov(np.stack([columns, rows])) if len(rows) > 1 else np.zeros((2, 2))
    values, vectors = np.linalg.eigh(covariance + np.eye(2) * 1e-6)
    radii = np.maximum(2 * np.sqrt(np.maximum(values, 0)), minimum / 2)
    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    unit = np.stack([np.cos(angles) * radii[0], np.sin(angles) * radii[1]])
    return [tuple(point) for point in (vectors @ unit).T + centre]


MARKER = (255, 0, 0)  # the prompts' ellipse: red, as the paper (CLIP learned that a red circle marks what matters)


def visual_prompts(view: Image.Image, mask: np.ndarray, thickness: int, marker=MARKER) -> list[Image.Image]:
    """The paper's three prompts for a region: a thin ellipse (`marker` colour) around it, the same on a
    greyscale image with the region in colour (reverse greyscale), and on a blurred image with the region sharp
    (reverse blur)."""
    outline = ellipse_points(mask, minimum=4 * thickness)
    inside = Image.new("L", view.size, 0)
    ImageDraw.Draw(inside).polygon(outline, fill=255)
    grey = Image.composite(view, view.convert("L").convert("RGB"), inside)
    blurred = Image.composite(view, view.filter(ImageFilter.GaussianBlur(2 * thickness)), inside)
    prompts = []
    for base in (view, grey, blurred):
        prompt = base.copy()
        ImageDraw.Draw(prompt).line(outline + outline[:1], fill=tuple(marker), width=thickness)
        prompts.append(prompt)
    return prompts


def blurred(view: Image.Image, mask: np.ndarray, radius: float) -> Image.Image:
    """The view with the pixels of `mask` blurred."""
    return Image.composite(view.filter(ImageFilter.GaussianBlur(radius)), view,
                           Image.fromarray(mask.astype(np.uint8) * 255))


@torch.no_grad()
def embed_concepts(model: ClipModel, view: Image.Image, parts: torch.Tensor, count: int, marker=MARKER
                   ) -> torch.Tensor:
    """`[count, D]` unit embeddings of each concept: the mean of its three visual prompts' embeddings."""
    thickness = max(1, round(model.geometry.image_size[0] / 224))
    prompts = [prompt for concept in range(count)
               for prompt in visual_prompts(view, concept_mask(model, parts, concept), thickness, marker)]
    embeddings = model.encode_images(prompts).reshape(count, 3, -1).mean(dim=1)
    return F.normalize(embeddings, dim=-1)


@torch.no_grad()
def _probabilities(model: ClipModel, images: torch.Tensor, class_texts: torch.Tensor) -> torch.Tensor:
    """`[B, C]` zero-shot probabilities of image embeddings `[B, D]` (normalised here)."""
    images = F.normalize(images.float(), dim=-1)
    return torch.softmax(model.model.logit_scale.exp().float() * images @ class_texts.T, dim=-1)


def blur_curves(model: ClipModel, view: Image.Image, parts: torch.Tensor, count: int, class_texts: torch.Tensor,
                target: int) -> tuple[list[float], list[float], list[float]]:
    """(importance `[count]`: the target's probability drop when each concept alone is blurred; deletion and
    insertion curves in the order of importance, from nothing blurred / everything blurred)."""
    radius = max(2.0, model.geometry.image_size[0] / BLUR_FRACTION)
    masks = [concept_mask(model, parts, k) for k in range(count)]

    def union(chosen: list[int]) -> np.ndarray:
        return np.any([masks[k] for k in chosen], axis=0) if chosen else np.zeros(masks[0].shape, bool)

    alone = [blurred(view, mask, radius) for mask in masks]
    scores = _probabilities(model, model.encode_images([view] + alone), class_texts)[:, target].tolist()
    importance = [scores[0] - s for s in scores[1:]]
    order = by_importance(importance)
    deleted = [blurred(view, union(order[:i + 1]), radius) for i in range(count)]
    inserted = [blurred(view, ~union(order[:i]), radius) for i in range(count + 1)]  # from everything blurred
    after = _probabilities(model, model.encode_images(deleted + inserted), class_texts)[:, target].tolist()
    return importance, [scores[0]] + after[:count], after[count:]


# --- one image, one class ----------------------------------------------------------------------------------------

def language_size(descriptors: DescriptorSet, top_text: int | None = None) -> int:
    """u: `top_text`, else as many descriptors as a class has on average (rounded), at most `TOP_TEXT`: a language
    side the size of a class's own description, so that a small pool is not half picked by chance."""
    if top_text is not None:
        return int(check_number(top_text, "Language-side descriptors", 1, MAX_DESCRIPTORS, integer=True))
    average = np.mean([len(values) for values in descriptors.descriptors.values()])
    return int(min(TOP_TEXT, max(1, round(average))))


def _language_side(descriptors: DescriptorSet, pool_texts: torch.Tensor, class_text: torch.Tensor,
                   top_text: int | None) -> list[str]:
    """The u descriptors of the pool closest to the class's prompt embedding (text encoder alone)."""
    ranking = (pool_texts @ class_text).argsort(descending=True)
    return [descriptors.pool[i] for i in ranking[:language_size(descriptors, top_text)].tolist()]


def _result(descriptors, probabilities, target, parts, importance, matched, pool, textual, deletion, insertion,
            picture, box, warnings) -> MutualKnowledge:
    order = by_importance(importance)
    part_concepts = [[pool[i] for i in row] for row in matched]
    visual = list(dict.fromkeys(d for concepts in part_concepts for d in concepts))
    vision_list = [d for concepts in part_concepts for d in concepts]
    curve = mi_dynamics(part_concepts, order, textual)
    return MutualKnowledge(
        classes=descriptors.classes, probabilities=probabilities.cpu(), predicted=descriptors.classes[target],
        parts=parts, importance=importance, part_concepts=part_concepts, visual=visual, textual=textual,
        shared=[d for d in visual if d in textual], mutual_information=contingency_information(vision_list, textual),
        mi_curve=curve, mi_auc=sum(curve) / len(curve), deletion=deletion, insertion=insertion,
        deletion_auc=deletion_area(deletion), insertion_auc=deletion_area(insertion), picture=picture, box=box,
        warnings=warnings)


@torch.no_grad()
def mutual_knowledge(model: ClipModel, image: ImageSource, descriptors: DescriptorSet | dict, parts: int = CONCEPTS,
                     per_concept: int = PER_CONCEPT, top_text: int | None = None, marker=None) -> MutualKnowledge:
    """Explain the zero-shot prediction of `image` among `descriptors.classes` by the concepts both sides share,
    with the paper's protocol (see the module's docstring). `parts`: L, the visual concepts; `per_concept`:
    descriptors each concept keeps; `top_text`: u, descriptors of the language side (`language_size`);
    `marker`: the prompts' ellipse colour (RGB; default: `default_marker`)."""
    if not isinstance(descriptors, DescriptorSet):
        descriptors = descriptor_set(descriptors)
    parts = check_number(parts, "Concepts", MIN_PARTS, MAX_PARTS, integer=True)
    picture = load_image(image)
    view, box = model_view(model, picture)
    batch = model.preprocess_images([view])
    encoded = model.tokenize(descriptors.prompts())
    class_texts = model.embed_tokens(encoded)  # [C, D]
    pool_texts = model.encode_texts(descriptors.pool)  # [M, D]
    probabilities = _probabilities(model, model.model.encode_image(batch), class_texts)[0]
    target = int(probabilities.argmax())

    keys = last_layer_keys(model, batch)[0]
    labels = visual_concepts(keys, prominent_patches(keys, model.geometry.grid), parts)
    grid = labels.reshape(model.geometry.grid)
    count = int(labels.max()) + 1
    matched = match_descriptors(embed_concepts(model, view, grid, count, marker or default_marker(model)),
                                pool_texts, per_concept)
    importance, deletion, insertion = blur_curves(model, view, grid, count, class_texts, target)
    textual = _language_side(descriptors, pool_texts, class_texts[target], top_text)
    return _result(descriptors, probabilities, target, grid, importance, matched, descriptors.pool, textual,
                   deletion, insertion, picture, box, encoded.warnings())


@torch.no_grad()
def class_mutual_knowledge(model: ClipModel, images: list[ImageSource], descriptors: DescriptorSet | dict,
                           class_name: str | None = None, parts: int = CONCEPTS, per_concept: int = PER_CONCEPT,
                           top_text: int | None = None, marker=None,
                           texts: tuple[torch.Tensor, torch.Tensor] | None = None) -> MutualKnowledge:
    """The paper's class-level analysis: the visual concepts are found over the prominent patches of all
    `images` (of one class: `class_name`, default the class most of them are predicted as), each concept is
    embedded by its visual prompts averaged over the images it appears in, and the curves are averaged over the
    images. `probabilities`: the mean zero-shot distribution; `parts`: the first image's concepts. `texts`: the
    descriptors' `descriptor_texts`, when the caller has them already (one class after another)."""
    if not isinstance(descriptors, DescriptorSet):
        descriptors = descriptor_set(descriptors)
    if not images:
        raise InterpretError("Give at least one image of the class.")
    parts = check_number(parts, "Concepts", MIN_PARTS, MAX_PARTS, integer=True)
    views = [model_view(model, load_image(image))[0] for image in images]
    batch = model.preprocess_images(views)
    class_texts, pool_texts = texts if texts is not None else descriptor_texts(model, descriptors)
    probabilities = _probabilities(model, model.model.encode_image(batch), class_texts)  # [N, C]
    if class_name is None:
        target = int(torch.bincount(probabilities.argmax(dim=1), minlength=len(descriptors.classes)).argmax())
    elif class_name in descriptors.classes:
        target = descriptors.classes.index(class_name)
    else:
        raise InterpretError(f"{_short(class_name)} is not one of the descriptor set's classes.")

    keys = last_layer_keys(model, batch)  # [N, P, width]
    foreground = torch.stack([prominent_patches(k, model.geometry.grid) for k in keys])  # [N, P]
    labels = visual_concepts(keys.flatten(0, 1), foreground.flatten(), parts).reshape(foreground.shape)
    count = int(labels.max()) + 1
    grids = [row.reshape(model.geometry.grid) for row in labels]
    embeddings = torch.zeros(count, class_texts.shape[1])
    seen = torch.zeros(count)
    for view, grid in zip(views, grids):
        present, own = _own_concepts(grid)
        if present:
            embeddings[present] += embed_concepts(model, view, own, len(present), marker or default_marker(model))
            seen[present] += 1
    matched = match_descriptors(embeddings / seen.clamp(min=1)[:, None], pool_texts, per_concept)
    importance = torch.zeros(count)
    deletions, insertions = [], []
    for view, grid in zip(views, grids):
        present, own = _own_concepts(grid)
        alone, deletion, insertion = blur_curves(model, view, own, len(present), class_texts, target)
        importance[present] += torch.tensor(alone) / len(views)
        deletions.append(deletion)
        insertions.append(insertion)
    textual = _language_side(descriptors, pool_texts, class_texts[target], top_text)
    return _result(descriptors, probabilities.mean(dim=0), target, grids[0], importance.tolist(), matched,
                   descriptors.pool, textual, _mean_curve(deletions), _mean_curve(insertions), None, (0, 0, 0, 0),
                   [])


def descriptor_texts(model: ClipModel, descriptors: DescriptorSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit class prompt embeddings `[C, D]`, unit pool embeddings `[M, D]`)."""
    return model.encode_texts(descriptors.prompts()), model.encode_texts(descriptors.pool)


def _own_concepts(grid: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """(the class-level concepts present in one image's `grid`, the grid renumbered 0..len-1 in that order)."""
    present = sorted(int(k) for k in grid.unique() if k >= 0)
    own = torch.full_like(grid, -1)
    for position, concept in enumerate(present):
        own[grid == concept] = position
    return present, own


def _mean_curve(curves: list[list[float]]) -> list[float]:
    """Curves of different lengths (images with fewer concepts) averaged on [0, 1] at the longest one's points."""
    points = max(len(curve) for curve in curves)
    grid = np.linspace(0, 1, points)
    return np.mean([np.interp(grid, np.linspace(0, 1, len(curve)), curve) if len(curve) > 1 else
                    np.full(points, curve[0]) for curve in curves], axis=0).tolist()


# --- per model ---------------------------------------------------------------------------------------------------

def default_marker(model: ClipModel) -> tuple[int, int, int]:
    """The prompts' ellipse colour for `model`: red (the paper's; web-trained CLIP learned that a red circle marks
    what matters), white for the toy model, whose world has red objects and which never saw a drawn mark."""
    return (255, 255, 255) if is_toy(model.name) else MARKER


@dataclass
class ModelMutual:
    """One model over a labelled set: zero-shot top-1; the mean over classes of the class-level mutual
    information (bits), MI-dynamics AUC and deletion AUC; top-1 with each class's shared descriptors added to its
    prompt ("descriptor-boosted"); and each class's shared descriptors."""

    model: str
    images: int
    classes: int
    accuracy: float
    mutual_information: float
    mi_auc: float
    deletion_auc: float
    boosted_accuracy: float
    shared: dict[str, list[str]]


@torch.no_grad()
def evaluate_model(model: ClipModel, samples: dict[str, list[ImageSource]], descriptors: DescriptorSet,
                   parts: int = CONCEPTS, per_class: int = 10, progress=None) -> ModelMutual:
    """`samples`: images by their true class (classes of `descriptors`). The class-level analysis runs on at most
    `per_class` images of each class; accuracy counts every image."""
    unknown = [name for name in samples if name not in descriptors.classes]
    if unknown:
        raise InterpretError(f"{len(unknown)} image folder(s) are not classes of the descriptors, e.g. "
                             f"{_short(unknown[0])}.")
    images = [(image, descriptors.classes.index(name)) for name, values in samples.items() for image in values]
    if not images:
        raise InterpretError("No images to evaluate.")
    embeddings = torch.cat([model.encode_images([image for image, _ in images[i:i + 32]])
                            for i in range(0, len(images), 32)])
    truth = torch.tensor([label for _, label in images])
    texts = descriptor_texts(model, descriptors)  # encoded once, not once a class
    plain = texts[0]
    results = {}
    for name, values in samples.items():
        if values:
            results[name] = class_mutual_knowledge(model, values[:per_class], descriptors, name, parts, texts=texts)
            if progress is not None:
                progress(name)
    shared = {name: result.shared for name, result in results.items()}
    boosted = boosted_class_texts(model, descriptors, shared)
    return ModelMutual(
        model=model.label, images=len(images), classes=len(results),
        accuracy=float(((embeddings @ plain.T).argmax(dim=1) == truth).float().mean()),
        mutual_information=float(np.mean([r.mutual_information for r in results.values()])),
        mi_auc=float(np.mean([r.mi_auc for r in results.values()])),
        deletion_auc=float(np.mean([r.deletion_auc for r in results.values()])),
        boosted_accuracy=float(((embeddings @ boosted.T).argmax(dim=1) == truth).float().mean()), shared=shared)


def boosted_class_texts(model: ClipModel, descriptors: DescriptorSet, shared: dict[str, list[str]]) -> torch.Tensor:
    """`[C, D]` unit class embeddings: the mean of the class prompt's and of "{prompt}, which has {descriptor}"
    for each of its shared descriptors (Menon & Vondrick's form), the plain prompt where none is shared."""
    rows = []
    for name, prompt in zip(descriptors.classes, descriptors.prompts()):
        texts = [prompt] + [f"{prompt}, which has {d}" for d in shared.get(name, [])]
        rows.append(F.normalize(model.encode_texts(texts).mean(dim=0), dim=0))
    return torch.stack(rows)


def accuracy_on_auc(rows: list[ModelMutual]) -> tuple[float, float, float] | None:
    """The paper's linear fit of accuracy on MI-dynamics AUC across models: (slope, intercept, Pearson r), or None
    for fewer than 3 models (or no spread)."""
    if len(rows) < 3:
        return None
    x = np.array([row.mi_auc for row in rows])
    y = np.array([row.accuracy for row in rows])
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept), float(np.corrcoef(x, y)[0, 1])
