"""Spatial decomposition (all layers) vs the plain image forward pass, measured side by side in one run.

    python benchmarks/bench_decompose.py [--models ViT-B-16 ViT-L-14] [--batches 1 8] [--repeats 3]

Time: plain `encode_image` and `decompose_image(spatial=True)` run alternately on the same input; the table gives
medians and their ratio. Also timed: the per-head, per-token scores against one caption (`token_scores`) and
building the full `[B, L, H, T, D]` tensor (`.heads`), both optional follow-ups.
Memory: each of plain / decompose runs in a fresh process (Linux); the peak RSS during the call, weights included,
and its excess over the loaded model ("+MB") are reported. Random-init weights (no download needed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.decompose import decompose_image  # noqa: E402
from interpret.models import load_model  # noqa: E402
from benchmarks.memory import reset_peak, status_mb  # noqa: E402


def measure_memory(name: str, batch: int, method: str) -> dict:
    """Child process: load the model, give freed heap back to the OS, reset the kernel's peak-RSS mark, run
    `method` once; report the peak RSS during the call (weights included) and its excess over the loaded state."""
    model = load_model(name)
    images = torch.randn(batch, 3, *model.geometry.image_size)
    model.folded_head_weights()  # a per-model constant, computed once at first use
    loaded = reset_peak()
    with torch.no_grad():
        result = model.model.encode_image(images) if method == "plain" else decompose_image(model, images)
    peak = status_mb("VmHWM")
    del result
    return {"peak_mb": peak, "extra_mb": peak - loaded}


def time_pair(name: str, batch: int, repeats: int) -> dict:
    model = load_model(name)
    images = torch.randn(batch, 3, *model.geometry.image_size)
    text = model.encode_texts(["a photo of a dog"])
    plain, decompose, scores, materialise = [], [], [], []
    with torch.no_grad():
        model.model.encode_image(images)  # warm-up
        decompose_image(model, images)
        for _ in range(repeats):
            start = time.perf_counter()
            model.model.encode_image(images)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            decomposition = decompose_image(model, images)
            decompose.append(time.perf_counter() - start)
            start = time.perf_counter()
            decomposition.token_scores(text)
            scores.append(time.perf_counter() - start)
            start = time.perf_counter()
            _ = decomposition.heads
            materialise.append(time.perf_counter() - start)
            del _, decomposition
    return {name: statistics.median(values) for name, values in
            (("plain_s", plain), ("decompose_s", decompose), ("token_scores_s", scores),
             ("heads_tensor_s", materialise))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ViT-B-16", "ViT-L-14"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "BATCH", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_memory(args.child[0], int(args.child[1]), args.child[2])))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; random-init weights; "
          f"median of {args.repeats}")
    header = ("model", "batch", "plain s", "decomp s", "time x", "scores s", ".heads s",
              "plain MB", "decomp MB", "mem x", "plain +MB", "decomp +MB")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name in args.models:
        for batch in args.batches:
            times = time_pair(name, batch, args.repeats)
            memory = {}
            for method in ("plain", "decompose"):
                output = subprocess.run([sys.executable, __file__, "--child", name, str(batch), method],
                                        capture_output=True, text=True, check=True).stdout
                memory[method] = json.loads(output.strip().splitlines()[-1])
            row = (name, batch, f"{times['plain_s']:.3f}", f"{times['decompose_s']:.3f}",
                   f"{times['decompose_s'] / times['plain_s']:.2f}", f"{times['token_scores_s']:.3f}",
                   f"{times['heads_tensor_s']:.3f}", f"{memory['plain']['peak_mb']:.0f}",
                   f"{memory['decompose']['peak_mb']:.0f}",
                   f"{memory['decompose']['peak_mb'] / memory['plain']['peak_mb']:.2f}",
                   f"{memory['plain']['extra_mb']:.0f}", f"{memory['decompose']['extra_mb']:.0f}")
            print(" | ".join(str(cell) for cell in row), flush=True)


if __name__ == "__main__":
    main()
