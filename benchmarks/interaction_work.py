"""How well `interact.interaction_work` (multiply-adds, from shapes alone) predicts the time of an interaction map,
and so what the app's budget (`limits.MAX_INTERACTION_WORK`) means in seconds on this machine.

    python benchmarks/interaction_work.py [--models toy ViT-B-32 toy-pooled PE-Core-B-16] [--threads 2]

For each model (random-init weights, or the bundled toy), several layer and step settings, each timed once after
a warm-up, in one run: the estimate, the time, and their ratio (GMAC/s). The budget in seconds is the budget
divided by the rates of the maps of at least 50 GMAC (smaller ones are dominated by fixed costs).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.interact import interaction_map, interaction_work  # noqa: E402
from interpret.limits import MAX_INTERACTION_WORK  # noqa: E402
from interpret.models import load_model  # noqa: E402

SETTINGS = {"toy": [(0, 0, 5), (0, 0, 1), (2, 0, 10), (-1, -1, 10)],
            "ViT-B-32": [(10, 10, 2), (9, 9, 1), (11, 0, 2), (-1, -1, 10)],
            # an attention pooler: the image side in reverse mode, one pass per caption token
            "toy-pooled": [(0, 0, 5), (2, 0, 10), (-1, -1, 10)],
            "PE-Core-B-16": [(-1, -1, 10), (-1, -1, 4), (10, -1, 2)]}
CAPTION = "a red circle on a blue square"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["toy", "ViT-B-32"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    picture = Image.new("RGB", (224, 224), "red")
    rates = []
    print("| model | image / text layer | steps | estimate (GMAC) | time (s) | GMAC/s |\n|---|---|---|---|---|---|")
    for name in args.models:
        model = load_model(name, None, "cpu")
        interaction_map(model, picture, CAPTION, -1, -1, 2)  # warm-up
        for image_layer, text_layer, steps in SETTINGS.get(name, SETTINGS["ViT-B-32"]):
            work = interaction_work(model, CAPTION, image_layer, text_layer, steps)
            started = time.perf_counter()
            interaction_map(model, picture, CAPTION, image_layer, text_layer, steps)
            seconds = time.perf_counter() - started
            if work >= 50e9:  # small maps are dominated by fixed costs, not by their work
                rates.append(work / seconds)
            print(f"| {name} | {image_layer} / {text_layer} | {steps} | {work / 1e9:.1f} | {seconds:.2f} | "
                  f"{work / seconds / 1e9:.0f} |")
    print(f"\nThe app's budget, {MAX_INTERACTION_WORK / 1e9:.0f} GMAC, is at most "
          f"{MAX_INTERACTION_WORK / min(rates):.1f} s "
          f"here (at the slowest rate of a large map, {min(rates) / 1e9:.0f} GMAC/s) and at least "
          f"{MAX_INTERACTION_WORK / max(rates):.1f} s.")


if __name__ == "__main__":
    main()
