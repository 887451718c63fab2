"""Each explanation method's cost for one map, as a ratio to one plain forward pass of the same model
(`encode_image`, batch 1), side by side in one run; and the deletion / insertion curves' cost.

    python benchmarks/bench_explain.py [--models toy ViT-B-16] [--repeats 5]

Random-init ViT-B-16 (no download) and the bundled toy model; a random picture and "a photo of a dog"; medians
of `--repeats` after a warm-up, the plain pass timed between the maps.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.explanations import METHODS, Subject, explain  # noqa: E402
from interpret.faithfulness import perturbation_curves  # noqa: E402
from interpret.models import load_model  # noqa: E402


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["toy", "ViT-B-16"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8))
    print("| model | method | seconds | / one forward pass |\n|---|---|---|---|")
    for name in args.models:
        model = load_model(name)
        subject = Subject.of(model, picture, "a photo of a dog")
        with torch.no_grad():
            plain = median_seconds(lambda: model.model.encode_image(subject.batch), args.repeats)
        print(f"| {name} | plain encode_image | {plain:.4f} | 1.00 |")
        grid = None
        for method in METHODS:
            seconds = median_seconds(lambda: explain(model, subject, method=method), args.repeats)
            grid = explain(model, subject, method=method).map.grid
            print(f"| {name} | {method} | {seconds:.4f} | {seconds / plain:.1f} |", flush=True)
        seconds = median_seconds(lambda: perturbation_curves(model, subject, grid, 16, "blur"), args.repeats)
        print(f"| {name} | deletion + insertion curves (16 steps, 34 images) | {seconds:.4f} | {seconds / plain:.1f} |")


if __name__ == "__main__":
    main()
