"""What each figure the page shows costs to draw (numpy and PIL, `interpret.render`), on a 12 x 12 model's sizes.

    python benchmarks/bench_figures.py [--repeats 20] [--out DIR]

Made-up values of the shapes a ViT-B model gives (12 layers x 12 heads, a 224 px picture, 5 concepts, 9 maps);
the median of `--repeats` draws of each, in milliseconds. `--out` saves one of each as PNG, to look at.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from PIL import Image  # noqa: E402

from interpret import render  # noqa: E402
from interpret.quantify import PruningCurves  # noqa: E402

PROPERTIES = ["colour", "shape", "texture", "location", "material", "untagged", "position", "size", "animal",
              "object", "person", "count"]


def figures(rng: np.random.Generator) -> dict:
    picture = Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))
    grid = [[PROPERTIES[(layer * 5 + head) % 12] for head in range(12)] for layer in range(12)]
    parts = rng.integers(-1, 5, (7, 7))
    curves = PruningCurves([0, 4, 8, 12], {effect: {name: list(np.sort(rng.random(4))[::-1])
                                                    for name in ("high", "random", "low")}
                                           for effect in ("zero", "direct")}, [], [], 3)
    return {
        "head grid": lambda: render.head_grid(rng.normal(size=(12, 12)), "a title", mlps=rng.normal(size=12)),
        "map overlay": lambda: render.map_overlay(picture, rng.normal(size=(224, 224)), 0.6, "a title"),
        "token strip": lambda: render.token_strip(["<start>", "a", "photo", "of", "a", "dog", "<end>"],
                                                  rng.normal(size=7), "a title", [2]),
        "property grid": lambda: render.property_grid(grid, "a title", highlight=(3, 4)),
        "consistency grid": lambda: render.consistency_grid(rng.integers(0, 6, (12, 12)), grid, "a title"),
        "parts overlay": lambda: render.parts_overlay(picture, parts, (0, 0, 224, 224),
                                                      [f"descriptor {k}, another" for k in range(5)], "a title"),
        "concept Venn": lambda: render.concept_venn(["red", "round"], ["a dog"], ["fur", "ears", "tail"], "a title"),
        "mutual curves": lambda: render.mutual_curves([1.5, 1.2, 0.8, 0.3, 0.0, 0.0], [0.9, 0.5, 0.3, 0.2, 0.1, 0.1],
                                                      [0.1, 0.4, 0.6, 0.8, 0.9, 0.9], [2, 0, 1, 3, 4]),
        "pruning curves": lambda: render.pruning_plot([("a model", curves)]),
        "comparison grid": lambda: render.maps_side_by_side(
            picture, [(f"method {k}", rng.random((224, 224)), "note") for k in range(9)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    print("| figure | size (px) | ms (median) |\n|---|---|---|")
    for name, draw in figures(np.random.default_rng(0)).items():
        picture = draw()  # warm-up (fonts, colour tables)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            draw()
            times.append((time.perf_counter() - started) * 1000)
        print(f"| {name} | {picture.width} x {picture.height} | {statistics.median(times):.1f} |")
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            picture.save(args.out / f"{name.replace(' ', '-')}.png")


if __name__ == "__main__":
    main()
