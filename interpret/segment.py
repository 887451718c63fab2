"""Topic and contrastive segmentation maps from the spatial decomposition, and zero-shot segmentation.

A head's contribution to the image-text cosine score splits over the source tokens it attends to
(`ImageDecomposition.token_scores`); dropping the class token and laying the patch tokens on their grid gives a
map of where that head (or a set of heads, or all heads) finds the text. A contrastive map is the map of one
text minus the map of another. One decomposition of the image serves any number of texts and heads
(`ImageMaps`), so a map costs about one forward pass.

Maps are drawn on the image the user gave: the patch grid covers the centre crop the model's preprocess takes
(shortest side resized, centre cropped), so the grid is upsampled (bilinear) onto that box of the original image;
pixels outside the box were not seen and are 0.

Zero-shot segmentation (the TextSpan paper's protocol, itself from Chefer et al.'s ImageNet-segmentation
evaluation): with class prompts, the all-heads map of the predicted class minus the mean of the maps of all
classes; min-max normalised; foreground where it exceeds its mean. `evaluate_segmentation` reports pixel accuracy,
mIoU (mean of the foreground and background IoU, intersections and unions summed over the images) and mAP (the
mean over images of the average precision of the normalised map as a foreground score).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .decompose import STREAM_EMBEDDING, STREAM_REST, decompose_image
from .drawing import signed_number
from .errors import InterpretError
from .images import ImageSource, load_image
from .limits import MAX_SPEC_CHARS, check_text, check_texts
from .models import ClipModel, head_index, layer_index
from .parts import PARTS_NAMES, checked_parts

HeadSelection = Sequence[tuple[int, int]] | None


@dataclass
class SpatialMap:
    """Per-patch contributions to a cosine score (or a difference of two).

    grid: `[grid_h, grid_w]` on the patch grid; image: `[H, W]` float32, the grid upsampled onto `box` of the
    input image (0 outside); box: (left, top, right, bottom) of the input image the model saw; text: what was
    mapped ('red' or 'red − blue'); heads: which heads ('all heads', 'layer 3', 'head 3.2', ...)."""

    grid: torch.Tensor
    image: np.ndarray
    box: tuple[int, int, int, int]
    text: str
    heads: str

    @property
    def peak(self) -> tuple[int, int]:
        """(row, column) of the largest value on the grid (counted from 0, at the top left)."""
        row, column = divmod(int(self.grid.argmax()), self.grid.shape[1])
        return row, column

    @property
    def bound(self) -> float:
        """The end of the map's colour scale, -bound..+bound: the largest magnitude on the grid (the upsampled
        `image` never exceeds it, and its summary states it)."""
        return float(self.grid.abs().max()) or 1e-12

    def summary(self) -> str:
        """One line: the range and sum of the patch contributions, the colour scale, and where the largest (or,
        when no patch adds to the score, the most negative) is, in the numbers the figure shows."""
        grid = self.grid
        low, high = float(grid.min()), float(grid.max())
        line = (f"patch contributions from {signed_number(low)} to {signed_number(high)} (sum "
                f"{signed_number(float(grid.sum()))}) on the {grid.shape[0]}x{grid.shape[1]} grid, coloured from "
                f"{signed_number(-self.bound)} to {signed_number(self.bound)}; ")
        if high > 0:
            row, column = self.peak
            line += f"the largest at row {row}, column {column}"
        else:
            row, column = divmod(int(grid.argmin()), grid.shape[1])
            line += f"no patch adds to the score; the most negative at row {row}, column {column}"
        return line + " (rows and columns count from 0 at the top left)"


@dataclass
class PartSelection:
    """Which parts a map sums: `heads` `[L, H]` weights of the heads (at the tokens they read), `rows` `[K]`
    weights of the stream's parts at each token (`decompose.TokenStreams` rows), and a name for them."""

    heads: torch.Tensor
    rows: torch.Tensor
    name: str


class ImageMaps:
    """One image's spatial decomposition, reused for every topic or contrastive map asked of it."""

    def __init__(self, model: ClipModel, image: ImageSource):
        self.model = model
        self.picture = load_image(image)
        self.decomposition = decompose_image(model, [self.picture], spatial=True)
        self.box = crop_box(model, self.picture.size)

    def token_scores(self, texts: list[str]) -> torch.Tensor:
        """`[L, H, T, M]`: each head's and token's contribution to the cosine score with each text."""
        return self.decomposition.token_scores(self.model.encode_texts(texts))[0]

    def part_scores(self, texts: list[str], selection: PartSelection) -> torch.Tensor:
        """`[T, M]`: the chosen parts' contributions to the cosine score with each text, at each token."""
        embedded = self.model.encode_texts(texts)
        scores = torch.einsum("lhtm,lh->tm", self.decomposition.token_scores(embedded)[0],
                              selection.heads.to(embedded))
        if selection.rows.any():
            streams = self.decomposition.stream_scores(embedded)[0]  # [K, T, M]
            scores = scores + torch.einsum("ktm,k->tm", streams, selection.rows.to(embedded))
        return scores

    def topic(self, text: str, layer: int | Sequence[int] | None = None, head: int | None = None,
              heads: HeadSelection = None, relative_to: str | Sequence[str] | None = None,
              parts: str | None = None) -> SpatialMap:
        """Where the chosen parts find `text` (see `topic_map`); with `relative_to`, minus the mean map of
        those texts."""
        others = check_texts([relative_to] if isinstance(relative_to, str) else list(relative_to or []),
                             "Relative to")
        selection = self.select(parts, layer, head, heads)
        scores = self.part_scores([text, *others], selection)  # [T, 1 + others]
        if not others:
            return self._spatial(scores[:, 0], text.strip(), selection.name)
        if len(others) == 1:
            label = f"{text.strip()} − {others[0].strip()}"
        elif len(others) <= 5:
            label = f"{text.strip()} − mean({', '.join(other.strip() for other in others)})"
        else:
            label = f"{text.strip()} − mean of {len(others)} texts"
        return self._spatial(scores[:, 0] - scores[:, 1:].mean(dim=1), label, selection.name)

    def contrastive(self, text_a: str, text_b: str, layer: int | Sequence[int] | None = None, head: int | None = None,
                    heads: HeadSelection = None, parts: str | None = None) -> SpatialMap:
        """Where the chosen parts find `text_a` rather than `text_b`: map(a) − map(b)."""
        return self.topic(text_a, layer, head, heads, relative_to=text_b, parts=parts)

    def select(self, parts: str | None = None, layer=None, head=None, heads: HeadSelection = None) -> PartSelection:
        """The parts a map sums (`MAP_PARTS`; None: `DEFAULT_PARTS`), narrowed by a layer (or layers: their heads
        and MLPs), a head of it, or a set of heads (`select_heads`)."""
        parts = checked_parts(parts)
        chosen, name = self.select_heads(layer, head, heads)
        streams = self.decomposition.streams
        rows = torch.zeros(streams.streams.shape[1])
        if heads is not None or head is not None:
            if parts not in ("all", "heads"):
                raise InterpretError(f"A head is chosen: it has no {PARTS_NAMES[parts].removeprefix('the ')}; map its part with "
                                     "'heads' or 'all'.")
            return PartSelection(chosen, rows, name)
        if parts == "embedding" and layer is not None:
            raise InterpretError("The embedding layer comes before the blocks: map it without a layer.")
        layers = range(self.model.geometry.layers) if layer is None else \
            [self._layer(l) for l in ([layer] if isinstance(layer, int) else layer)]
        if parts in ("all", "mlps"):
            rows[[streams.mlp_row(l) for l in layers]] = 1
        if parts == "embedding" or (parts == "all" and layer is None):
            rows[STREAM_EMBEDDING] = 1
        if parts == "all" and layer is None:
            rows[STREAM_REST] = 1
        if parts not in ("all", "heads"):
            chosen = torch.zeros_like(chosen)
        return PartSelection(chosen, rows, _parts_name(parts, name, layer is None))

    def select_heads(self, layer=None, head=None, heads: HeadSelection = None) -> tuple[torch.Tensor, str]:
        """`[L, H]` 0/1 weights of the chosen heads and a name for them. `heads` (pairs) wins; else `layer`
        (an index, negative from the end, or several) with `head` (one of them) or all its heads; else all."""
        g = self.model.geometry
        chosen = torch.zeros(g.layers, g.heads)
        if heads is not None:
            for l, h in heads:
                chosen[self._layer(l), self._head(h)] = 1
            if not heads:
                raise InterpretError("No heads chosen.")
            name = ", ".join(f"{self._layer(l)}.{h}" for l, h in heads)
            return chosen, f"head{'s' if len(heads) > 1 else ''} {name}"
        if layer is None:
            if head is not None:
                raise InterpretError("Choose a layer for the head.")
            return chosen + 1, "all heads"
        layers = [self._layer(l) for l in ([layer] if isinstance(layer, int) else layer)]
        if head is not None:
            for l in layers:
                chosen[l, self._head(head)] = 1
            return chosen, ", ".join(f"head {l}.{head}" for l in layers)
        chosen[layers] = 1
        return chosen, ("layer " if len(layers) == 1 else "layers ") + ", ".join(map(str, layers))

    def _layer(self, layer: int) -> int:
        return layer_index(layer, self.model.geometry.layers, self.model.label)

    def _head(self, head: int) -> int:
        return head_index(head, self.model.geometry.heads, self.model.label)

    def _spatial(self, per_token: torch.Tensor, text: str, heads: str) -> SpatialMap:
        geometry = self.model.geometry
        grid = per_token[geometry.prefix:].reshape(*geometry.grid)  # prefix tokens (class token) are not places
        grid = grid.cpu()  # results live on the CPU (they are drawn and printed there)
        return SpatialMap(grid, upsample(grid, self.picture.size, self.box), self.box, text, heads)


def _parts_name(parts: str, heads_name: str, every_layer: bool) -> str:
    """How a map of `parts` is titled: 'all parts', 'all heads', 'layer 3', 'the MLPs of layer 3', ..."""
    if parts == "heads":
        return heads_name
    if every_layer:
        return {"all": "all parts", "mlps": "all MLPs", "embedding": "the embedding layer"}[parts]
    layers = heads_name.partition(" ")[2]  # 'layer 3' -> '3'
    plural = "s" if "," in layers else ""
    return f"layer{plural} {layers}: heads and MLP{plural}" if parts == "all" else f"the MLP{plural} of layer{plural} {layers}"


def parse_heads(spec: str | None) -> dict:
    """The page's head choice -> keyword arguments of `topic_map`: '' or 'all' (all heads), '11' (a layer),
    '11.4' (a head), '11.4, 10.2' (a set of heads)."""
    text = check_text(spec, "The heads list", MAX_SPEC_CHARS).strip().lower()
    if text in ("", "all", "all heads"):
        return {}
    try:
        if "." not in text and "," not in text:
            return {"layer": int(text)}
        pairs = [tuple(int(part) for part in item.strip().split(".")) for item in text.split(",") if item.strip()]
        if not pairs or any(len(pair) != 2 for pair in pairs):
            raise ValueError
    except ValueError:
        raise InterpretError(f"Heads '{spec}' not understood: write 'all', a layer ('11'), a head ('11.4') or "
                             "heads ('11.4, 10.2').") from None
    return {"layer": pairs[0][0], "head": pairs[0][1]} if len(pairs) == 1 else {"heads": pairs}


def topic_map(model: ClipModel, image: ImageSource, text: str, layer: int | Sequence[int] | None = None,
              head: int | None = None, heads: HeadSelection = None,
              relative_to: str | Sequence[str] | None = None, parts: str | None = None) -> SpatialMap:
    """Where in `image` the chosen parts of the tower find `text`: their per-patch contributions to the
    image-text cosine score. `parts` (`MAP_PARTS`, default `DEFAULT_PARTS`): "all" (every part: the heads at the
    tokens they read, the MLPs and the embedding layer at the token they write, the biases), "heads", "mlps" or
    "embedding". `layer=None`: every layer; `layer` alone: that layer's (or layers') parts; `layer` and `head`: one
    head; `heads=[(layer, head), ...]`: a set. Use `ImageMaps` to make many maps of one image.

    Through a class token only the class token's own MLPs are read, so "all" and "heads" are the same patch map;
    through an attention pooler (SigLIP, PE-Core, CoCa) or a patch average every patch's MLPs and embedding reach
    the embedding, and "all" shows them too.

    `relative_to` (a text or several): the map minus the mean of their maps. A map alone also holds what the
    image gives every text (CLIP's shared direction: background and objects alike); taking away the map of
    alternatives ("something blue", "something green", ...; the class prompts in the TextSpan protocol) leaves
    what is particular to `text`."""
    return ImageMaps(model, image).topic(text, layer, head, heads, relative_to, parts)


def contrastive_map(model: ClipModel, image: ImageSource, text_a: str, text_b: str,
                    layer: int | Sequence[int] | None = None, head: int | None = None,
                    heads: HeadSelection = None, parts: str | None = None) -> SpatialMap:
    """`topic_map(text_a) − topic_map(text_b)`, from one decomposition of the image."""
    return ImageMaps(model, image).contrastive(text_a, text_b, layer, head, heads, parts)


def crop_box(model: ClipModel, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) of an image of `size` (width, height) that the model's preprocess
    keeps: the centre square when it resizes the shortest side and crops the centre, else the whole image."""
    width, height = size
    names = [type(step).__name__ for step in getattr(model.preprocess, "transforms", [])]
    if "CenterCrop" not in names:
        return 0, 0, width, height
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def upsample(grid: torch.Tensor, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """`[gh, gw]` -> `[H, W]` float32: bilinear onto `box`, 0 elsewhere."""
    width, height = size
    left, top, right, bottom = box
    inside = F.interpolate(grid[None, None].float().cpu(), size=(bottom - top, right - left), mode="bilinear",
                           align_corners=False)[0, 0]
    out = np.zeros((height, width), np.float32)
    out[top:bottom, left:right] = inside.numpy()
    return out


# --- zero-shot segmentation -------------------------------------------------------------------------------------

@dataclass
class Segmentation:
    """Zero-shot segmentation of one image: the predicted class, the normalised map `[H, W]` (0..1) and the
    foreground mask (map above its mean)."""

    predicted: int
    score_map: np.ndarray
    mask: np.ndarray


def zero_shot_segmentation(model: ClipModel, image: ImageSource, class_texts: torch.Tensor) -> Segmentation:
    """Segment the predicted class with all heads; `class_texts` `[C, D]` unit embeddings of the class prompts."""
    maps = ImageMaps(model, image)
    scores = maps.decomposition.token_scores(class_texts)[0]  # [L, H, T, C]
    per_class = scores.sum(dim=(0, 1))  # [T, C]
    predicted = int((maps.decomposition.embedding[0] @ class_texts.T).argmax())  # the model's own zero-shot pick
    relative = per_class[:, predicted] - per_class.mean(dim=1)
    normalised, mask = thresholded(maps._spatial(relative, "", "all heads"))
    return Segmentation(predicted, normalised, mask)


def thresholded(spatial: SpatialMap) -> tuple[np.ndarray, np.ndarray]:
    """The segmentation protocol's threshold of a map: (the map min-max normalised to 0..1 inside the picture the
    model saw, 0 outside; the foreground: above its mean there)."""
    left, top, right, bottom = spatial.box
    seen = spatial.image[top:bottom, left:right]
    normalised = np.zeros_like(spatial.image)
    normalised[top:bottom, left:right] = (seen - seen.min()) / max(float(seen.max() - seen.min()), 1e-12)
    mask = np.zeros(spatial.image.shape, bool)
    mask[top:bottom, left:right] = normalised[top:bottom, left:right] > normalised[top:bottom, left:right].mean()
    return normalised, mask


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the precision-recall curve of `scores` as a detector of `truth` (both flat), as scikit-learn's
    `average_precision_score` defines it (ties broken as they fall)."""
    order = np.argsort(-scores, kind="stable")
    hits = truth[order].astype(np.float64)
    if hits.sum() == 0:
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def overlap(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """`[2, 2]`: intersection and union (rows) of background and foreground (columns) of two `[H, W]` masks;
    sum them over images before taking `mean_iou`."""
    return np.array([[np.logical_and(p, t).sum(), np.logical_or(p, t).sum()]
                     for p, t in ((~predicted, ~truth), (predicted, truth))], dtype=np.float64).T


def mean_iou(intersection: np.ndarray, union: np.ndarray) -> float:
    """mIoU of the segmentation protocol: the mean over background and foreground of intersection / union."""
    return float(np.mean(intersection / np.maximum(union, 1)))


def evaluate_segmentation(model: ClipModel, samples: Iterable[tuple[ImageSource, np.ndarray]],
                          classes: list[str]) -> dict[str, float]:
    """Pixel accuracy, mIoU and mAP of zero-shot segmentation over (image, foreground mask `[H, W]` bool)."""
    class_texts = model.encode_texts(classes)
    intersection, union = np.zeros(2), np.zeros(2)
    correct = total = 0
    precisions = []
    for image, truth in samples:
        result = zero_shot_segmentation(model, image, class_texts)
        truth = np.asarray(truth, dtype=bool)
        if truth.shape != result.mask.shape:
            raise InterpretError(f"A mask of shape {truth.shape} does not match its image {result.mask.shape}.")
        counts = overlap(result.mask, truth)
        intersection, union = intersection + counts[0], union + counts[1]
        correct += int((result.mask == truth).sum())
        total += truth.size
        precisions.append(average_precision(result.score_map.ravel(), truth.ravel()))
    if total == 0:
        raise InterpretError("No images to evaluate.")
    return {"pixel accuracy": correct / total, "mIoU": mean_iou(intersection, union),
            "mAP": float(np.nanmean(precisions)), "images": len(precisions)}

