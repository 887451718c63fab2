"""Build throughput: the local engine against Ray with 1 and 2 workers, in one run; and a projection to ImageNet-1k.

    python benchmarks/bench_engines.py [--images ../shared/data/images/imagenet-sample] [--limit 512]

1. `build_index` (random-init ViT-B-32, last 4 layers, batch 32) over the same images with the local engine, with
   Ray (started here on this machine's cores) and 1 worker, and with 2 workers; each run builds afresh, and the
   three databases are checked to hold the same bytes. Throughput as ratios to the local engine.
2. Per-image costs measured here: reading and preprocessing one JPEG (one core), and decomposing one image (all
   heads, last 4 layers, summed over tokens) with random-init ViT-B-16 and ViT-L-14 on this CPU.
3. A projection of ImageNet-1k train (1,281,167 images) for ViT-B-16 and ViT-L-14 on 1, 8 and 64 GPUs, from those
   costs and the assumptions printed with it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

from interpret.decompose import decompose_image  # noqa: E402
from interpret.engines import RayEngine, import_ray  # noqa: E402
from interpret.images import list_images, load_image  # noqa: E402
from interpret.index import MANIFEST, build_index, default_layers  # noqa: E402
from interpret.models import load_model  # noqa: E402

IMAGENET_TRAIN = 1_281_167
# Assumptions of the projection (named in the output):
GPU_EFFECTIVE_FLOPS = 100e12  # one H100 on these matmuls in TF32: about a quarter of its dense peak
CPU_CORES_PER_GPU = 8  # decoding cores beside each GPU
SCALING_EFFICIENCY = {1: 1.0, 8: 0.95, 64: 0.85}  # shared file system, stragglers, the driver's merge


def build_seconds(model, folder: Path, out: Path, engine=None) -> float:
    started = time.perf_counter()
    build_index(model, folder, out, batch_size=32, progress=False, engine=engine)
    return time.perf_counter() - started


def data_hashes(out: Path) -> dict:
    return {name: item["sha256"] for name, item in json.loads((out / MANIFEST).read_text())["files"].items()}


def image_flops(model) -> float:
    """Forward FLOPs of the image tower for one image: 2 x parameters x tokens (the decomposition adds little)."""
    g = model.geometry
    parameters = sum(p.numel() for p in model.visual.parameters())
    return 2.0 * parameters * (g.grid[0] * g.grid[1] + 1)


def per_image_costs(paths: list[Path]) -> dict[str, float]:
    """Seconds per image: decode + preprocess on one core, and decomposing with ViT-B-16 and ViT-L-14 here; and
    the two models' FLOPs per image."""
    costs = {}
    model = load_model("ViT-B-16", None)
    started = time.perf_counter()
    pictures = [model.preprocess(load_image(path)) for path in paths[:64]]
    costs["decode"] = (time.perf_counter() - started) / len(pictures)
    for name in ("ViT-B-16", "ViT-L-14"):
        model = load_model(name, None)
        batch = torch.stack(pictures[:8])
        decompose_image(model, batch[:2], layers=default_layers(model), spatial=False)  # warm-up
        started = time.perf_counter()
        decompose_image(model, batch, layers=default_layers(model), spatial=False)
        costs[name] = (time.perf_counter() - started) / len(batch)
        costs[name + " flops"] = image_flops(model)
    return costs


def projection(costs: dict[str, float]) -> None:
    print("## ImageNet-1k train (1,281,167 images), projected\n")
    print(f"Measured here (2 CPU cores): reading + preprocessing a JPEG {1000 * costs['decode']:.1f} ms on one core; "
          f"decomposing an image (last 4 layers) ViT-B-16 {costs['ViT-B-16']:.2f} s, "
          f"ViT-L-14 {costs['ViT-L-14']:.2f} s.\n")
    print(f"Assumptions: a GPU (H100) sustains {GPU_EFFECTIVE_FLOPS / 1e12:.0f} TFLOP/s on the image tower "
          "(TF32, large batches: about a quarter of its dense peak), and an image costs 2 x parameters x tokens "
          "FLOPs ("
          + ", ".join(f"{name} {costs[name + ' flops'] / 1e9:.0f} GFLOP" for name in ("ViT-B-16", "ViT-L-14"))
          + f"; this CPU reached {costs['ViT-B-16 flops'] / costs['ViT-B-16'] / 1e9:.0f} GFLOP/s decomposing); "
          f"{CPU_CORES_PER_GPU} decoding cores beside each GPU at this machine's per-core rate; scaling efficiency "
          f"{', '.join(f'{n} GPU: {e:.2f}' for n, e in SCALING_EFFICIENCY.items())} (shared storage, stragglers, "
          "the driver's merge); one Ray worker per GPU.\n")
    print("| model | images/s per GPU | bound by | 1 GPU | 8 GPUs | 64 GPUs |\n|---|---|---|---|---|---|")
    for name in ("ViT-B-16", "ViT-L-14"):
        gpu_rate = GPU_EFFECTIVE_FLOPS / costs[name + " flops"]
        decode_rate = CPU_CORES_PER_GPU / costs["decode"]
        rate = min(gpu_rate, decode_rate)
        cells = []
        for gpus, efficiency in SCALING_EFFICIENCY.items():
            hours = IMAGENET_TRAIN / (rate * gpus * efficiency) / 3600
            cells.append(f"{hours:.1f} h" if hours >= 1 else f"{60 * hours:.1f} min")
        print(f"| {name} | {rate:,.0f} | {'GPU' if gpu_rate <= decode_rate else 'decoding'} | " + " | ".join(cells)
              + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(ROOT.parent / "shared/data/images/imagenet-sample"))
    parser.add_argument("--limit", type=int, default=512)
    args = parser.parse_args()
    ray = import_ray()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    paths = list_images(args.images)[:args.limit]
    model = load_model("ViT-B-32", None)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        folder.mkdir()
        for path in paths:
            os.symlink(path, folder / path.name)
        engines = {"local engine": None, "Ray, 1 worker": RayEngine(workers=1), "Ray, 2 workers": RayEngine(workers=2)}
        seconds, hashes = {}, {}
        for name, engine in engines.items():
            out = Path(scratch) / name.replace(" ", "-").replace(",", "")
            seconds[name] = build_seconds(model, folder, out, engine)
            hashes[name] = data_hashes(out)
        same = all(value == hashes["local engine"] for value in hashes.values())
        print(f"## Build throughput ({len(paths)} images of {Path(args.images).name}, {model.label}, last 4 layers, "
              f"batch 32, {os.cpu_count()} CPU cores)\n")
        print("| engine | seconds | images/s | throughput vs local |\n|---|---|---|---|")
        for name, value in seconds.items():
            print(f"| {name} | {value:.1f} | {len(paths) / value:.1f} | {seconds['local engine'] / value:.2f}x |")
        print(f"\nThe three databases hold the same bytes: {'yes' if same else 'NO'}. (Ray's times include "
              "starting its actors and loading the model in each.)\n")
        projection(per_image_costs(paths))
    ray.shutdown()


if __name__ == "__main__":
    main()
