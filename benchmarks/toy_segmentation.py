"""Truth check of topic and contrastive maps on the toy world (two-object scenes whose objects differ in colour
and in shape; evaluation seeds, never trained on).

    python benchmarks/toy_segmentation.py [--scenes 300]

The measures are `interpret.toy.evaluate.segmentation_truth`'s (see its docstring):
- mIoU is the segmentation protocol's (mean of background and foreground IoU, summed over objects), "object
  IoU" the foreground IoU alone; "raw" is the word's map thresholded at its mean, "relative" the word's map
  relative to all words of its kind (minus their mean map: the TextSpan zero-shot protocol);
- pointing: the map's maximum lies on the object; contrastive pointing: the maximum of map(its word) − map(the
  other object's word) does; "red − blue" counts red objects beside a blue one.
Rows: all heads, the heads labelled colour (summed), those labelled shape, each of those heads alone, and two
references that use no model: a perfect patch-level map and predicting nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.banks import toy_bank  # noqa: E402
from interpret.models import load_model  # noqa: E402
from interpret.textspan import describe_heads  # noqa: E402
from interpret.toy.evaluate import segmentation_truth, two_object_scenes  # noqa: E402
from interpret.toy.train import toy_images  # noqa: E402

COLUMNS = ("colour mIoU raw", "colour mIoU relative", "colour object IoU raw", "colour object IoU relative",
           "colour pointing", "colour contrastive pointing", "red − blue pointing", "shape mIoU relative",
           "shape object IoU relative", "shape pointing", "shape contrastive pointing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=300)
    args = parser.parse_args()
    model = load_model("toy")
    atlas = describe_heads(model, toy_images(2000), toy_bank(), progress=False)
    selections = {"all heads": {}}
    for prop in ("colour", "shape"):
        chosen = atlas.heads_with(prop)
        selections[f"{prop} heads ({len(chosen)})"] = {"heads": chosen}
    for prop in ("colour", "shape"):
        for layer, head in atlas.heads_with(prop):
            selections[f"head {layer}.{head} ({prop})"] = {"heads": [(layer, head)]}
    rows = segmentation_truth(model, two_object_scenes(args.scenes), selections)
    print(f"{args.scenes} two-object toy scenes (objects differ in colour and shape)\n")
    print("heads | " + " | ".join(COLUMNS))
    print(" | ".join(["---"] * (len(COLUMNS) + 1)))
    for name, row in rows.items():
        if name in selections:
            print(f"{name} | " + " | ".join(f"{row[key]:.3f}" for key in COLUMNS))
    print()
    for name, row in rows.items():
        if name not in selections:
            print(f"{name}: mIoU {row['mIoU']:.3f}, object IoU {row['object IoU']:.3f}")


if __name__ == "__main__":
    main()
