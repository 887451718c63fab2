"""Completeness of interaction maps: |residual| / |explained| on random-init ViT-B-32 for the shared example
images x three captions, with the paper's right Riemann sum and with the midpoint rule.

    python benchmarks/interact_completeness.py [--steps 50 200] [--images 8]

Random-init models give small cosine scores, so `explained` is small and the relative residual of the right
rule (whose error shrinks as 1/steps) is large for some pairs; the midpoint rule's error shrinks as 1/steps^2.
Needs ../shared/data/images/examples (skips without it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from interpret.interact import interaction_map  # noqa: E402
from interpret.models import load_model  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "images" / "examples"
CAPTIONS = ("a photo of a dog", "a red circle next to a blue square", "two cats on a sofa in the sun")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    if not EXAMPLES.is_dir():
        print(f"skipped: {EXAMPLES} not found")
        return
    torch.set_num_threads(2)
    model = load_model("ViT-B-32")
    images = sorted(EXAMPLES.glob("*.png"))[: args.images]
    print(f"random-init ViT-B-32, {len(images)} images x {len(CAPTIONS)} captions, last blocks\n")
    print("| rule | steps | median | max | share under 1% |")
    print("|---|---|---|---|---|")
    for rule in ("right", "midpoint"):
        for steps in args.steps:
            ratios = [abs(r.residual / r.explained) for r in
                      (interaction_map(model, image, caption, steps=steps, rule=rule)
                       for image in images for caption in CAPTIONS)]
            print(f"| {rule} | {steps} | {np.median(ratios):.2%} | {np.max(ratios):.2%} | "
                  f"{np.mean(np.array(ratios) < 0.01):.2f} |", flush=True)


if __name__ == "__main__":
    main()
