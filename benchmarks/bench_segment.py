"""Time of a topic map against a plain forward pass of the image tower, side by side in one run.

    python benchmarks/bench_segment.py [--model ViT-B-16] [--repeats 15]
    python benchmarks/bench_segment.py --model ViT-B-16-SigLIP   # an attention pooler

Random-init weights; a 640 x 480 photo (or a drawn image when the shared data is absent).
- plain: preprocess + `model.encode_image` (one image);
- topic map, heads only and all parts (`topic_map(model, image, text, parts=...)`): preprocess, the spatial
  decomposition, the text's embedding, per-token scores, and the upsampling to the photo's size;
- a further map of the same image: `ImageMaps.topic` on a kept decomposition (what the app does when the
  text, the heads or the opacity change).
The three run in turn in each round; medians over the rounds, after one warm-up round.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from interpret.images import load_image  # noqa: E402
from interpret.models import load_model  # noqa: E402
from interpret.segment import ImageMaps, topic_map  # noqa: E402


def seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def side_by_side(functions: dict, repeats: int) -> dict[str, list[float]]:
    """Each function once per round, in turn (so that a slow spell of the machine hits all of them), after
    one warm-up round."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(seconds(function))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    model = load_model(args.model, None)
    photo = ROOT.parent / "shared/data/images/examples/dogcat2.png"
    image = load_image(photo) if photo.is_file() else Image.new("RGB", (640, 480), (200, 120, 40))
    image = image.resize((640, 480))

    def plain():
        with torch.no_grad():
            model.model.encode_image(model.preprocess_images([image]))

    maps = ImageMaps(model, image)
    times = side_by_side({"plain": plain, "heads": lambda: topic_map(model, image, "a dog", parts="heads"),
                          "all": lambda: topic_map(model, image, "a dog", parts="all"),
                          "again": lambda: maps.topic("a cat", layer=-1)}, args.repeats)
    print(f"{model.label}, one 640 x 480 image, {args.repeats} rounds; medians, and the median of each "
          "round's ratio to the plain forward pass\n")
    print("| | seconds | x plain forward |\n|---|---|---|")
    rows = (("plain encode_image", "plain"), ("topic_map, heads only (text included)", "heads"),
            ("topic_map, all parts (text included)", "all"), ("another map of the same image", "again"))
    for label, name in rows:
        ratio = statistics.median(t / p for t, p in zip(times[name], times["plain"]))
        print(f"| {label} | {statistics.median(times[name]):.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
