"""Time of a topic map against a plain forward pass of the image tower, side by side in one run.

    python benchmarks/bench_segment.py [--model ViT-B-16] [--repeats 7]

Random-init weights; a 640 x 480 photo (or a drawn image when the shared data is absent).
- plain: preprocess + `model.encode_image` (one image);
- topic map: `topic_map(model, image, text)`, all heads: preprocess, the spatial decomposition, the text's
  embedding, per-token scores, and the upsampling to the photo's size;
- a further map of the same image: `ImageMaps.topic` on a kept decomposition (what the app does when the
  text, the heads or the opacity change).
Medians over the repeats, after one warm-up of each.
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


def timed(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model = load_model(args.model, None)
    photo = ROOT.parent / "shared/data/images/examples/dogcat2.png"
    image = load_image(photo) if photo.is_file() else Image.new("RGB", (640, 480), (200, 120, 40))
    image = image.resize((640, 480))

    def plain():
        with torch.no_grad():
            model.model.encode_image(model.preprocess_images([image]))

    maps = ImageMaps(model, image)
    plain_s = timed(plain, args.repeats)
    map_s = timed(lambda: topic_map(model, image, "a dog"), args.repeats)
    again_s = timed(lambda: maps.topic("a cat", layer=-1), args.repeats)
    print(f"{model.label}, one 640 x 480 image, median of {args.repeats} runs\n")
    print("| | seconds | x plain forward |\n|---|---|---|")
    print(f"| plain encode_image | {plain_s:.3f} | 1.00 |")
    print(f"| topic_map (all heads, text included) | {map_s:.3f} | {map_s / plain_s:.2f} |")
    print(f"| another map of the same image | {again_s:.3f} | {again_s / plain_s:.2f} |")


if __name__ == "__main__":
    main()
