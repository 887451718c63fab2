"""Truth check of topic and contrastive maps on the toy world (two-object scenes whose objects differ in colour
and in shape; evaluation seeds, never trained on).

    python benchmarks/toy_segmentation.py [--scenes 300]

- topic mIoU: the map of one object's word ("something {colour}" or "a {shape}"), thresholded at its mean,
  against that object's mask, averaged over objects; "raw" is the word's map itself, "relative" the word's map
  minus the mean of the maps of all words of its kind (the TextSpan paper's segmentation protocol);
  "ceiling" is what a perfect patch-level map gets: the true mask averaged onto the patch grid, upsampled the
  same way and thresholded at its mean (with 8 x 8 patches of 8 px, small objects cover about 2 x 2 patches);
- topic pointing: the map's maximum lies on that object (its mask grown by one pixel);
- contrastive pointing: the maximum of map("something {colour a}") − map("something {colour b}") (or of the
  two shapes) lies on object a; "red − blue" counts only scenes holding a red and a blue object.
Rows: all heads, the heads labelled colour (summed), those labelled shape, and each of those heads alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from interpret.banks import toy_bank  # noqa: E402
from interpret.models import load_model  # noqa: E402
from interpret.segment import ImageMaps, upsample  # noqa: E402
from interpret.textspan import describe_heads  # noqa: E402
from interpret.toy.evaluate import COLOUR_PROMPTS, SHAPE_PROMPTS, two_object_scenes  # noqa: E402
from interpret.toy.train import toy_images  # noqa: E402
from interpret.toy.world import COLOURS, SHAPES  # noqa: E402

WORDS = {"colour": list(COLOUR_PROMPTS), "shape": list(SHAPE_PROMPTS)}


def grow(mask: np.ndarray) -> np.ndarray:
    """The mask and its 8 neighbours."""
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def iou(values: np.ndarray, mask: np.ndarray) -> float:
    """IoU of `values` thresholded at their mean with `mask`."""
    predicted = values > values.mean()
    return float((predicted & mask).sum() / max((predicted | mask).sum(), 1))


def on(values: np.ndarray, mask: np.ndarray) -> bool:
    return bool(grow(mask).flat[int(np.argmax(values))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=300)
    args = parser.parse_args()
    model = load_model("toy")
    atlas = describe_heads(model, toy_images(2000), toy_bank(), progress=False)
    g = model.geometry
    selections = {"all heads": torch.ones(g.layers, g.heads)}
    for prop in ("colour", "shape"):
        chosen = torch.zeros(g.layers, g.heads)
        for layer, head in atlas.heads_with(prop):
            chosen[layer, head] = 1
        selections[f"{prop} heads ({int(chosen.sum())})"] = chosen
    for prop in ("colour", "shape"):
        for layer, head in atlas.heads_with(prop):
            chosen = torch.zeros(g.layers, g.heads)
            chosen[layer, head] = 1
            selections[f"head {layer}.{head} ({prop})"] = chosen
    texts = WORDS["colour"] + WORDS["shape"]
    columns = ("colour raw iou", "colour iou", "colour point", "colour contrast", "red-blue", "shape iou",
               "shape point", "shape contrast")
    tallies = {name: {key: [] for key in columns} for name in selections}
    ceiling = []
    for scene in two_object_scenes(args.scenes):
        maps = ImageMaps(model, scene.image)
        scores = maps.token_scores(texts)  # [L, H, T, words]
        for mask in scene.masks:
            patches = torch.nn.functional.avg_pool2d(torch.tensor(mask, dtype=torch.float32)[None, None],
                                                     g.patch_size)[0, 0]
            ceiling.append(iou(upsample(patches, maps.picture.size, maps.box), mask))
        for name, chosen in selections.items():
            per_word = torch.einsum("lhtm,lh->mt", scores, chosen)[:, 1:].reshape(len(texts), *g.grid)
            pictures = {text: upsample(grid, maps.picture.size, maps.box) for text, grid in zip(texts, per_word)}
            relative = {}
            for kind, words in WORDS.items():
                mean = np.mean([pictures[word] for word in words], axis=0)
                relative.update({word: pictures[word] - mean for word in words})
            tally = tallies[name]
            for kind, attribute in (("colour", "colour"), ("shape", "shape")):
                words = [WORDS[kind][list(COLOURS if kind == "colour" else SHAPES).index(getattr(obj, attribute))]
                         for obj in scene.objects]
                for index, (word, other) in enumerate(((words[0], words[1]), (words[1], words[0]))):
                    mask, picture = scene.masks[index], pictures[word]
                    if kind == "colour":
                        tally["colour raw iou"].append(iou(picture, mask))
                    tally[f"{kind} iou"].append(iou(relative[word], mask))
                    tally[f"{kind} point"].append(on(picture, mask))
                    contrast = picture - pictures[other]
                    tally[f"{kind} contrast"].append(on(contrast, mask))
                    if kind == "colour" and word == "something red" and other == "something blue":
                        tally["red-blue"].append(on(contrast, mask))
    print(f"{args.scenes} two-object toy scenes (objects differ in colour and shape); "
          f"{len(tallies['all heads']['red-blue'])} hold a red and a blue object; mIoU ceiling of a perfect "
          f"patch-level map: {np.mean(ceiling):.3f}\n")
    print("heads | colour mIoU raw | colour mIoU relative | colour pointing | colour contrastive pointing | "
          "red − blue pointing | shape mIoU relative | shape pointing | shape contrastive pointing")
    print("--- | --- | --- | --- | --- | --- | --- | --- | ---")
    for name, tally in tallies.items():
        cells = [f"{np.mean(tally[key]):.3f}" if tally[key] else "-" for key in columns]
        print(f"{name} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
