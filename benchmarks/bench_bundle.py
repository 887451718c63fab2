"""What a bundle costs to build, per model: measured per-image and fixed costs, and the projection for a set.

    python benchmarks/bench_bundle.py [--models ViT-B-32 ViT-B-16 ViT-L-14] [--images 16] [--project 5000]

Random-init weights (the same computation as trained ones), `--images` photos of ../shared/data/images/
imagenet-sample, the general bank, on this machine's CPU (a GPU, where there is one, takes the `--device`).
Each model's bundle is built twice, on `--images` and on twice as many, in one run: the difference is the
per-image cost (decomposition for the database and for TextSpan, thumbnails), the rest is the fixed cost (the
bank's text embeddings, TextSpan over every head, writing). Prints both and the time for `--project` images.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from interpret.bundles import build_bundle  # noqa: E402
from interpret.models import load_model  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "data" / "images" / "imagenet-sample"


def timed_build(model, count: int, scratch: Path) -> float:
    images = scratch / f"images-{count}"
    images.mkdir(parents=True)
    for path in sorted(SAMPLES.glob("*.JPEG"))[:count]:
        shutil.copy(path, images / path.name)
    started = time.perf_counter()
    build_bundle(model, images, scratch / f"bundles-{count}", progress=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-B-16", "ViT-L-14"])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--project", type=int, default=5000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not SAMPLES.is_dir():
        raise SystemExit(f"{SAMPLES} is missing")
    print(f"| model | {args.images} images (s) | {2 * args.images} images (s) | per image (s) | fixed (s) | "
          f"{args.project:,} images (h) |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        model = load_model(name, None, args.device)
        with tempfile.TemporaryDirectory() as scratch:
            small = timed_build(model, args.images, Path(scratch))
            large = timed_build(model, 2 * args.images, Path(scratch))
        per_image = (large - small) / args.images
        fixed = small - per_image * args.images
        print(f"| {name} | {small:.1f} | {large:.1f} | {per_image:.2f} | {fixed:.0f} | "
              f"{(fixed + per_image * args.project) / 3600:.1f} |", flush=True)


if __name__ == "__main__":
    main()
