"""Truth check of second-order interaction maps on the toy world (two-object scenes whose objects differ in
colour and shape, captioned "a {colour 1} {shape 1} and a {colour 2} {shape 2}"; evaluation seeds, never trained
on), for every pair of layers (the hidden states entering image block i and text block t).

    python benchmarks/toy_interactions.py [--scenes 150] [--steps 10] [--layers 3,2 2,0 ...]

Columns are `interpret.toy.evaluate.interaction_truth`'s: pointing (the top patch of an object's colour word, or
of its colour and shape words, overlaps its box) and ranking (over the object's box, its colour / shape word
beats the other object's; red objects only for 'red').
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

from interpret.models import load_model  # noqa: E402
from interpret.toy.evaluate import interaction_truth, two_object_scenes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=150)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--layers", nargs="+", metavar="IMAGE,TEXT", help="layer pairs (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model("toy")
    scenes = two_object_scenes(args.scenes)
    text_layers = len(model.model.transformer.resblocks)
    print(f"{args.scenes} scenes, {2 * args.scenes} objects, steps = {args.steps}\n")
    print("| image layer | text layer | colour pointing | words pointing | colour ranking | shape ranking | "
          "red ranking | s per pair |")
    print("|---|---|---|---|---|---|---|---|")
    pairs = [tuple(int(v) for v in pair.split(",")) for pair in args.layers] if args.layers else \
        [(i, t) for i in range(model.geometry.layers) for t in range(text_layers)]
    for image_layer, text_layer in pairs:
        start = time.perf_counter()
        figures = interaction_truth(model, scenes, image_layer, text_layer, args.steps)
        seconds = (time.perf_counter() - start) / len(scenes)
        print(f"| {image_layer} | {text_layer} | {figures['colour pointing']:.3f} | {figures['words pointing']:.3f}"
              f" | {figures['colour ranking']:.3f} | {figures['shape ranking']:.3f} | {figures['red ranking']:.3f}"
              f" | {seconds:.3f} |", flush=True)


if __name__ == "__main__":
    main()
