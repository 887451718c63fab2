"""Do the app's figures keep the picture's colours recognisable? Measured on the toy world, where every object's
true colour is known.

    python benchmarks/overlay_colours.py [--scenes 200]

For each scene, the toy model's topic map of "something <colour of the object>" (all heads, relative to the other
five colours, as the Topic tab draws it) is laid over the picture the way a figure shows it, and each object pixel
is judged by the colour it shows: recognised when, of the six toy colours, the nearest (RGB distance) is the
object's own. Rows: the map at the app's opacity 0.6 over the colour picture (the old figure); the left panel of
the figure now (the picture as it is) and its right panel (the map over a light grey copy, which carries no object
colour by design); the mutual-knowledge parts as a 0.5 tint (old) and as outlines (now). Also the mean RGB
distance (0..441) between what an object pixel shows and its true colour.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib import colormaps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.models import load_model  # noqa: E402
from interpret.render import PART_COLOURS, diverging_norm, light_grey  # noqa: E402
from interpret.segment import ImageMaps  # noqa: E402
from interpret.toy.train import toy_scene  # noqa: E402
from interpret.toy.world import COLOURS  # noqa: E402


def judged(shown: np.ndarray, truth: np.ndarray, colour: str) -> tuple[float, float]:
    """(share of pixels whose nearest toy colour is `colour`, mean RGB distance to `truth`) of `shown` `[n, 3]`."""
    palette = np.array(list(COLOURS.values()), dtype=np.float64)
    nearest = np.argmin(((shown[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
    return float(np.mean(nearest == list(COLOURS).index(colour))), float(np.linalg.norm(shown - truth, axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=200)
    args = parser.parse_args()
    model = load_model("toy")
    cmap = colormaps["RdBu_r"]
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in (
        "map over the colour picture, opacity 0.6 (old)", "the picture panel (now)",
        "the map panel over light grey (now)", "parts tinted, opacity 0.5 (old)", "parts outlined (now)")}
    for seed in range(args.scenes):
        scene = toy_scene(90_000 + seed, count=1)
        colour = scene.objects[0].colour
        pixels = np.asarray(scene.image, dtype=np.float64)
        mask = scene.masks[0]
        truth = np.array(COLOURS[colour], dtype=np.float64)
        others = [f"something {c}" for c in COLOURS if c != colour]
        spatial = ImageMaps(model, scene.image).topic(f"something {colour}", relative_to=others)
        painted = cmap(diverging_norm(spatial.image)(spatial.image))[..., :3] * 255
        old = 0.4 * pixels + 0.6 * painted
        grey = 0.4 * light_grey(scene.image) + 0.6 * painted
        tint = np.array(PART_COLOURS_RGB[seed % len(PART_COLOURS_RGB)])
        tinted = 0.5 * pixels + 0.5 * tint
        outlined = pixels.copy()  # an outline covers the part's border, not the object inside it
        for name, shown in zip(rows, (old, pixels, grey, tinted, outlined)):
            rows[name].append(judged(shown[mask], truth, colour))
    print(f"{args.scenes} one-object toy scenes; object pixels judged by the colour they show")
    print("| figure | colour recognised | mean RGB distance to the true colour |")
    print("|---|---|---|")
    for name, values in rows.items():
        share, distance = np.mean(values, axis=0)
        print(f"| {name} | {share:.3f} | {distance:.0f} |")


PART_COLOURS_RGB = [tuple(int(code[i:i + 2], 16) for i in (1, 3, 5)) for code in PART_COLOURS]

if __name__ == "__main__":
    main()
