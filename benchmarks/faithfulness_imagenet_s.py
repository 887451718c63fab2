"""The faithfulness protocol (interpret/faithfulness.py) on ImageNet-S, or any images with masks, with real
weights: for a maintainer who has the hub and the data.

    python benchmarks/faithfulness_imagenet_s.py --root ImageNetS919 --names imagenet_names.txt \
        --models ViT-B-16:openai ViT-B-32:openai [--limit 500] [--methods all] [--out imagenet_s.csv]
    python benchmarks/faithfulness_imagenet_s.py --demo --models ViT-B-32 --limit 6    # end to end, offline

`--root`: ImageNet-S's folder, with `validation/<wnid>/*.JPEG` and `validation-segmentation/<wnid>/*.png` (the
class id in red + 256 x green; 0 background, 1000 left out). `--names`: lines `wnid class name` (ImageNet's
class names; without it the wnid is the text). The text of an image is "a photo of a {class}". `--demo` writes
toy scenes in the same layout (masks with ImageNet-S's id encoding, a few pixels marked 1000) into a temporary
folder and runs on them: the whole pipeline with random-init weights and no downloads. The scores of random
weights describe no trained model.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.cli import main as cli_main  # noqa: E402
from interpret.faithfulness import IMAGENET_S_IGNORED  # noqa: E402

DEMO_CLASSES = {"n09999001": "circle", "n09999002": "square", "n09999003": "triangle"}


def write_demo(root: Path, per_class: int = 4) -> dict[str, str]:
    """Toy scenes of one object in ImageNet-S's layout under `root`; returns wnid -> class name."""
    from interpret.toy.train import toy_scene

    seed = 950_000
    for wnid, shape in DEMO_CLASSES.items():
        (root / "validation" / wnid).mkdir(parents=True, exist_ok=True)
        (root / "validation-segmentation" / wnid).mkdir(parents=True, exist_ok=True)
        made = 0
        while made < per_class:
            scene = toy_scene(seed, count=1)
            seed += 1
            if scene.objects[0].shape != shape:
                continue
            scene.image.save(root / "validation" / wnid / f"{wnid}_{made}.JPEG", format="JPEG", quality=95)
            ids = np.where(scene.masks[0], list(DEMO_CLASSES).index(wnid) + 1, 0)
            ids[:2, :2] = IMAGENET_S_IGNORED  # a corner ImageNet-S leaves out
            encoded = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1).astype(np.uint8)
            Image.fromarray(encoded).save(root / "validation-segmentation" / wnid / f"{wnid}_{made}.png")
            made += 1
    return dict(DEMO_CLASSES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="ImageNet-S folder (validation/ and validation-segmentation/)")
    parser.add_argument("--names", help="lines 'wnid class name'")
    parser.add_argument("--demo", action="store_true", help="toy scenes in ImageNet-S's layout, offline")
    parser.add_argument("--models", nargs="+", default=["ViT-B-16:openai"], metavar="NAME[:TAG]")
    parser.add_argument("--methods", nargs="+", default=["all"])
    parser.add_argument("--limit", type=int, default=500, help="images at most (default: 500)")
    parser.add_argument("--steps", type=int, default=16, help="deletion / insertion steps")
    parser.add_argument("--out", default="imagenet_s.csv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.demo:
            root, names = Path(scratch), Path(scratch) / "names.txt"
            names.write_text("".join(f"{wnid} {name}\n" for wnid, name in write_demo(root).items()))
        elif args.root:
            root, names = Path(args.root), args.names
        else:
            parser.error("give --root (ImageNet-S) or --demo")
        # the faithfulness command, on ImageNet-S's layout: its table, the CSV
        return cli_main(["faithfulness", "--models", *args.models, "--methods", *args.methods, "--images",
                         str(root / "validation"), "--masks", str(root / "validation-segmentation"),
                         "--template", "a photo of a {}", "--limit", str(args.limit), "--steps", str(args.steps),
                         "--out", args.out, *(["--names", str(names)] if names else [])])


if __name__ == "__main__":
    sys.exit(main())
