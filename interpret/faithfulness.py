"""Which map to trust: the explanation methods of `explanations.py` scored on images whose truth is known.

Scores (per map; averaged over a set of samples by `evaluate_maps`):
- **pointing**: the map's maximum (upsampled onto the picture, inside what the model saw) falls on the object the
  text names, within the pointing game's tolerance (Zhang et al., "Top-down neural attention by excitation
  backprop", ECCV 2016: 15 pixels at 224 px, here 15/224 of the side the model saw: a map has one value per patch,
  and the peak of a partly covered patch lies at its centre). On scenes of one object this is the pointing game; on
  scenes of 2 to 4 objects, where the text names one of them, it is FIxLIP's multi-object pointing game (Baniecki
  et al., NeurIPS 2025), with the same tolerance.
- **mIoU** and **pixel accuracy**: the map min-max normalised inside the picture the model saw and thresholded
  at its mean (the TextSpan protocol, as `eval-seg`), against the object's mask; mIoU over background and
  foreground, intersections and unions summed over the samples.
- **deletion** and **insertion** AUC (Petsiuk, Das & Saenko, RISE, BMVC 2018): the image-text cosine score as the
  patches are replaced, most relevant first, by a blurred copy of the image or by its mean colour (deletion: lower
  is better), or put back into that copy in the same order (insertion: higher is better); the area under the
  score over the fraction of patches, with `steps` + 1 points. No masks are needed.

Samples: toy scenes whose masks are known (`toy_samples`: single objects and scenes of 2 to 4 objects, the text
naming one object in a phrasing drawn from several), or a folder of images with masks (`folder_samples`, the
documented layout below; ImageNet-S's validation set has it).

Folder layout: `images/<class>/<name>.<jpg|png|...>` and `masks/<class>/<name>.png` (the same relative path, any
image suffix); a mask pixel that is not 0 is the object: a plain black-and-white PNG works, and so do ImageNet-S's
masks (`validation/<wnid>/` and `validation-segmentation/<wnid>/`: the class id in red + 256 x green, 0 the
background, 1000 the pixels ImageNet-S leaves out, which are not the object here). The text is
`template.format(class)` with underscores as spaces, the class being the sub-folder's name or, with `names`
(wnid -> class name), its name.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InterpretError
from .explanations import METHODS, Subject, explain
from .models import ClipModel
from .segment import SpatialMap, mean_iou, overlap, thresholded as segment_threshold

BASELINES = ("blur", "mean")
IMAGENET_S_IGNORED = 1000  # ImageNet-S marks pixels it leaves out with class id 1000 (red 232, green 3)


@dataclass
class Sample:
    """One image, a text naming one object in it, and that object's mask `[H, W]` (bool, the picture's size)."""

    image: Image.Image
    text: str
    mask: np.ndarray
    objects: int = 1  # how many objects the image holds (multi-object pointing: 2 to 4)
    name: str = ""


# --- scores of one map ----------------------------------------------------------------------------------------

POINTING_TOLERANCE = 15 / 224  # of the side the model saw: the pointing game's 15 pixels at 224 px


def pointing_hit(spatial: SpatialMap, mask: np.ndarray, tolerance: float = POINTING_TOLERANCE) -> bool:
    """Whether the map's largest value inside the picture the model saw falls on `mask`, or within `tolerance` x
    that box's longest side of it (0: on the mask itself)."""
    left, top, right, bottom = spatial.box
    seen = spatial.image[top:bottom, left:right]
    row, column = np.unravel_index(int(np.argmax(seen)), seen.shape)
    rows, columns = np.nonzero(mask)
    if not len(rows):
        return False
    reach = tolerance * max(right - left, bottom - top)
    nearest = np.min((rows - (top + row)) ** 2 + (columns - (left + column)) ** 2)
    return bool(nearest <= reach ** 2)


def thresholded(spatial: SpatialMap) -> np.ndarray:
    """`[H, W]` bool: the map's foreground by the TextSpan protocol's threshold (`segment.thresholded`)."""
    return segment_threshold(spatial)[1]


def perturbation_curves(model: ClipModel, subject: Subject, grid: torch.Tensor, steps: int = 16,
                        baseline: str = "blur") -> tuple[np.ndarray, np.ndarray]:
    """The cosine score as the patches of `grid` `[gh, gw]` are removed most relevant first (deletion) and put
    back in the same order (insertion), at `steps` + 1 fractions from 0 to 1: two `[steps + 1]` arrays."""
    if baseline not in BASELINES:
        raise InterpretError(f"Unknown baseline '{baseline}': use one of {', '.join(BASELINES)}.")
    batch = subject.batch  # [1, 3, H, W]
    rows, columns = grid.shape
    order = torch.argsort(grid.flatten(), descending=True, stable=True)
    counts = torch.linspace(0, rows * columns, steps + 1).round().long()
    kept = torch.zeros(steps + 1, rows * columns)
    for i, count in enumerate(counts):
        kept[i, order[:count]] = 1.0
    masks = F.interpolate(kept.reshape(-1, 1, rows, columns), size=batch.shape[-2:], mode="nearest").to(batch)
    other = _blurred(batch) if baseline == "blur" else batch.mean(dim=(2, 3), keepdim=True).expand_as(batch)
    deleted = batch * (1 - masks) + other * masks
    inserted = other * (1 - masks) + batch * masks
    with torch.no_grad():
        scores = subject.score(model.model.encode_image(torch.cat([deleted, inserted]))).cpu().numpy()
    return scores[: steps + 1], scores[steps + 1:]


def area(curve: np.ndarray) -> float:
    """The area under a curve sampled at evenly spaced fractions from 0 to 1 (trapezoids)."""
    return float((curve[1:] + curve[:-1]).sum() / (2 * (len(curve) - 1)))


def _blurred(batch: torch.Tensor) -> torch.Tensor:
    """A Gaussian blur of the (normalised) image, sigma 1/45 of its side (5 pixels at 224, as RISE's 11 x 11,
    sigma 5 kernel)."""
    sigma = max(batch.shape[-1] / 45, 0.5)
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=batch.dtype, device=batch.device)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = batch.shape[1]
    padded = F.pad(batch, (radius, radius, radius, radius), mode="reflect")
    across = F.conv2d(padded, kernel.reshape(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(across, kernel.reshape(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


# --- over many samples ----------------------------------------------------------------------------------------

@dataclass
class Tally:
    """Running sums of one method's scores over samples."""

    hits: dict = field(default_factory=lambda: {"single": [0, 0], "multi": [0, 0]})
    intersection: np.ndarray = field(default_factory=lambda: np.zeros(2))
    union: np.ndarray = field(default_factory=lambda: np.zeros(2))
    correct: int = 0
    pixels: int = 0
    deletion: dict = field(default_factory=dict)
    insertion: dict = field(default_factory=dict)

    def add(self, sample: Sample, spatial: SpatialMap, curves: dict) -> None:
        kind = "single" if sample.objects == 1 else "multi"
        self.hits[kind][0] += pointing_hit(spatial, sample.mask)
        self.hits[kind][1] += 1
        predicted = thresholded(spatial)
        counts = overlap(predicted, sample.mask)
        self.intersection, self.union = self.intersection + counts[0], self.union + counts[1]
        self.correct += int((predicted == sample.mask).sum())
        self.pixels += sample.mask.size
        for baseline, (deletion, insertion) in curves.items():
            self.deletion.setdefault(baseline, []).append(area(deletion))
            self.insertion.setdefault(baseline, []).append(area(insertion))

    def row(self) -> dict[str, float]:
        single, multi = self.hits["single"], self.hits["multi"]
        row = {"pointing": single[0] / single[1] if single[1] else float("nan"),
               "multi-object pointing": multi[0] / multi[1] if multi[1] else float("nan"),
               "mIoU": mean_iou(self.intersection, self.union) if self.pixels else float("nan"),
               "pixel accuracy": self.correct / self.pixels if self.pixels else float("nan")}
        for baseline in self.deletion:
            row[f"deletion AUC ({baseline})"] = float(np.mean(self.deletion[baseline]))
            row[f"insertion AUC ({baseline})"] = float(np.mean(self.insertion[baseline]))
        return row


def evaluate_maps(model: ClipModel, samples: Iterable[Sample], methods: Sequence[str] = tuple(METHODS),
             steps: int = 16, baselines: Sequence[str] = BASELINES, progress: bool = False,
             options: dict | None = None) -> dict[str, dict[str, float]]:
    """Every method's scores over `samples` (see the module's docstring): {method: {score: value}}; `options`:
    {method: {option: value}}."""
    from tqdm import tqdm

    for name in methods:
        if name not in METHODS:
            raise InterpretError(f"Unknown explanation method '{name}'. Choose from: {', '.join(METHODS)}.")
    tallies = {name: Tally() for name in methods}
    count = 0
    for sample in tqdm(samples, desc=f"scoring maps of {model.label}", unit="image", disable=not progress):
        if sample.mask.shape != (sample.image.height, sample.image.width):
            raise InterpretError(f"The mask of {sample.name or 'an image'} is {sample.mask.shape[::-1]} pixels; "
                                 f"its image is {sample.image.size}.")
        subject = Subject.of(model, sample.image, sample.text)
        for name in methods:
            spatial = explain(model, subject, method=name, **(options or {}).get(name, {})).map
            curves = {baseline: perturbation_curves(model, subject, spatial.grid, steps, baseline)
                      for baseline in baselines}
            tallies[name].add(sample, spatial, curves)
        count += 1
    if not count:
        raise InterpretError("No images to score the maps on.")
    return {name: {**tally.row(), "images": count} for name, tally in tallies.items()}


# --- where samples come from ----------------------------------------------------------------------------------

PHRASINGS = ("{colour} {shape}", "{size} {colour} {shape}", "photo of a {colour} {shape}", "something {colour}",
             "{shape}")  # each with its article: 'a red circle', 'a photo of an orange cross', 'something red'...
# the held-out check's phrasings: none of the above, in the toy grammar ('a large circle', 'something large red',
# 'a red circle at the top left', 'a circle on the left', 'something red in the center')
HELD_OUT_PHRASINGS = ("{size} {shape}", "something {size} {colour}", "{colour} {shape} {position}",
                      "{shape} {position}", "something {colour} {position}")


def toy_samples(single: int, multi: int, seed: int = 900_000, phrasings: Sequence[str] = PHRASINGS) -> list[Sample]:
    """`single` toy scenes of one object and `multi` of 2 to 4, from evaluation seeds (never trained on, and
    not those any other check uses); the text names one object in a phrasing drawn at random among those of
    `phrasings` that tell it apart from the others in the scene ('a red circle', 'a large red circle', 'a photo of
    a red circle', 'something red', 'a circle'; `HELD_OUT_PHRASINGS` for the held-out check)."""
    from .toy.train import toy_scene
    from .toy.world import with_article

    rng = random.Random(seed)
    samples = []
    for index in range(single + multi):
        objects = 1 if index < single else 2 + index % 3
        scene = toy_scene(seed + index, count=objects)
        target = rng.randrange(objects)
        chosen = scene.objects[target]
        others = [obj for i, obj in enumerate(scene.objects) if i != target]
        usable = [phrase for phrase in phrasings if not any(_matches(phrase, obj, chosen) for obj in others)]
        phrase = rng.choice(usable or list(phrasings[:2]))
        named = phrase.removeprefix("photo of a ").format(colour=chosen.colour, shape=chosen.shape, size=chosen.size,
                                                         position=chosen.position)
        text = named if named.startswith("something") else with_article(named)
        text = f"a photo of {text}" if phrase.startswith("photo of") else text
        samples.append(Sample(scene.image, text, scene.masks[target], objects, f"toy scene {seed + index}"))
    return samples


def _matches(phrase: str, other, chosen) -> bool:
    """Whether `phrase` would describe `other` as well as `chosen` (it does not tell them apart)."""
    keys = [key for key in ("colour", "shape", "size", "position") if "{" + key + "}" in phrase]
    return all(getattr(other, key) == getattr(chosen, key) for key in keys)


def read_class_names(path: str | Path | None) -> dict[str, str]:
    """Folder -> class name from lines 'folder class name' (ImageNet's 'n01440764 tench, Tinca tinca': the
    first name); {} without a file."""
    if not path:
        return {}
    pairs = (line.strip().split(None, 1) for line in Path(path).read_text().splitlines() if line.strip())
    return {pair[0]: pair[1].split(",")[0].strip() for pair in pairs if len(pair) == 2}


def folder_samples(images: str | Path, masks: str | Path, template: str = "a photo of a {}",
                   limit: int | None = None, names: dict[str, str] | None = None) -> Iterator[Sample]:
    """Samples from `images/<class>/<name>.*` and `masks/<class>/<name>.png` (the module's docstring); images
    without a mask are skipped, a mask of another size than its image is refused."""
    from .images import list_images, load_image

    images, masks = Path(images), Path(masks)
    if not images.is_dir() or not masks.is_dir():
        raise InterpretError(f"Give a folder of class sub-folders of images and one of masks ({images}, {masks}).")
    found = 0
    for path in list_images(images):
        relative = Path(path).relative_to(images)
        candidates = [candidate for candidate in (masks / relative.parent).glob(relative.stem + ".*")]
        if not candidates or len(relative.parts) < 2:
            continue
        picture = load_image(path)
        channels = np.asarray(Image.open(candidates[0]).convert("RGB")).astype(np.int64)
        ids = channels[..., 0] + 256 * channels[..., 1] + 65536 * channels[..., 2]
        mask = (ids != 0) & (ids != IMAGENET_S_IGNORED)
        name = (names or {}).get(relative.parts[0], relative.parts[0]).replace("_", " ")
        yield Sample(picture, template.format(name), mask, 1, str(relative))
        found += 1
        if limit and found >= limit:
            return
