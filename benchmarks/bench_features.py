"""What sparse-autoencoder features cost on this machine, side by side in one run: token states (tokens a second),
SAE training (tokens a second), an image's features request against a plain forward pass, and the disk a
database's atlas (top images, frequency) takes per feature. The toy model, and a random-init ViT-B-32 with a fresh
SAE of saev's size (16 x 768 features, k = 32).

    python benchmarks/bench_features.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from interpret.dictionaries import explain_features, feature_atlas, token_states, train_sae  # noqa: E402
from interpret.models import load_model  # noqa: E402


def median_seconds(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("model | token states (tokens/s) | SAE training (tokens/s) | encode_image (s) | an image's 10 features, "
          "x encode_image | with the score without each (10 partial passes), x encode_image | atlas on disk (bytes a "
          "feature)")
    print("--- | --- | --- | --- | --- | --- | ---")
    for name in ("toy", "ViT-B-32"):
        model = load_model(name, None)
        g = model.geometry
        size = g.image_size[0]
        pictures = [Image.new("RGB", (size, size), (40 * i % 255, 90, 160)) for i in range(32)]
        batch = model.preprocess_images(pictures)
        layer = g.layers // 2 - 1
        states_time = median_seconds(lambda: token_states(model, batch, layer), args.repeats)
        sample = token_states(model, batch, layer)
        blocks = [sample + 0.01 * torch.randn_like(sample) for _ in range(12)]
        started = time.perf_counter()
        sae, report = train_sae(iter(blocks), g.width, layer, features=16 * g.width, tokens=len(blocks) *
                                sample.shape[0] * sample.shape[1], batch_size=1024, buffer_size=8192, progress=False)
        train_rate = report.tokens / (time.perf_counter() - started)
        one = pictures[:1]
        request = median_seconds(lambda: explain_features(model, one[0], "a photo", layer, 10, sae, None),
                                 args.repeats)
        maps_only = median_seconds(lambda: explain_features(model, one[0], None, layer, 10, sae, None), args.repeats)
        plain = median_seconds(lambda: model.model.encode_image(model.preprocess_images(one)), args.repeats)
        with tempfile.TemporaryDirectory() as scratch:
            for index, picture in enumerate(pictures):
                picture.save(Path(scratch) / f"{index:03d}.png")
            atlas = feature_atlas(model, sae, scratch, progress=False)
            saved = atlas.save(Path(scratch) / "atlas")
            disk = sum(path.stat().st_size for path in saved.iterdir())
        print(f"{model.label} | {len(batch) * g.tokens / states_time:,.0f} | {train_rate:,.0f} | {plain:.3f} | "
              f"{maps_only / plain:.1f} | {request / plain:.1f} | {disk / sae.config.features:.0f}")


if __name__ == "__main__":
    main()
