"""Transcoders of every MLP of a random-init ViT-B-32 from ONE pass over 1,000 photos, against the SAE of one layer as
trained until now, side by side in one run on this machine: the time of each (images read, features trained), the
ratio, and each transcoder's FVU, L0 and dead features on the held-out photos (every 10th).

    python benchmarks/vit_transcoders.py [--images ../shared/data/images/imagenet-sample] [--count 1000]
        [--features 12288] [--device cpu]

Random weights: FVU and L0 say how the recipe fits these MLPs, not what a trained CLIP's features are.
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
from interpret.dictionaries import train_dictionaries_of  # noqa: E402
from interpret.images import list_images  # noqa: E402
from interpret.models import load_model  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "images" / "imagenet-sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(PHOTOS))
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--features", type=int, help="features a dictionary (default: 16 x 768)")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    photos = list_images(args.images)[:args.count]
    if not photos:
        sys.exit(f"No photos in {args.images}.")
    model = load_model(args.model, None, args.device)
    with tempfile.TemporaryDirectory() as scratch:
        chosen = Path(scratch) / "photos"
        chosen.mkdir()
        for photo in photos:
            shutil.copy(photo, chosen / photo.name)
        middle = model.geometry.layers // 2 - 1
        started = time.monotonic()
        (sae_report, _), = train_dictionaries_of(model, "sae", [middle], images=chosen, features=args.features,
                                                 out=Path(scratch) / "sae", progress=False, describe=False).values()
        sae_seconds = time.monotonic() - started
        layers = list(range(model.geometry.layers))
        started = time.monotonic()
        results = train_dictionaries_of(model, "transcoder", layers, images=chosen, features=args.features,
                                        out=Path(scratch) / "transcoders", progress=False, describe=False)
        transcoder_seconds = time.monotonic() - started
    print(f"{model.label} on {args.device}, {len(photos)} photos ({sae_report.tokens:,} training tokens a "
          f"dictionary, {sae_report.features:,} features, k = 32):\n")
    print(f"- the SAE of block {middle} (one pass): {sae_seconds:.0f} s")
    print(f"- the transcoders of all {len(layers)} MLPs (one pass): {transcoder_seconds:.0f} s, "
          f"{transcoder_seconds / sae_seconds:.1f} x the SAE of one layer ({transcoder_seconds / sae_seconds / len(layers):.2f} x a layer)\n")
    print("MLP | FVU (held-out photos) | L0 | dead features\n--- | --- | --- | ---")
    for layer, (report, _) in results.items():
        print(f"{layer} | {report.fvu:.3f} | {report.l0:.1f} | {report.dead:,}")


if __name__ == "__main__":
    main()
