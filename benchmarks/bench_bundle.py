"""What a bundle costs to build, per model: measured per-image and fixed costs, and the projection for a set.

    python benchmarks/bench_bundle.py [--models ViT-B-32 ViT-B-16 ViT-L-14] [--images 16] [--project 5000]

Random-init weights (the same computation as trained ones) on this machine's CPU (`--device cuda` on a GPU).
Measured by parts, because TextSpan's cost grows with the number of images only up to its rank (80): a small
build would put TextSpan into the per-image cost.
- per image: decoding a photo of ../shared/data/images/imagenet-sample and writing its thumbnail; decomposing
  it over every layer (head labels) and over the last 4 layers (the database); medians over `--images` photos
  in batches of 16;
- neurons: the two passes of the neuron directions (`NeuronTask`) of each of the 3 MLP layers before the last
  (the build's default), on the same batches;
- fixed: the general bank's text embeddings (3,072 texts) and TextSpan (k = 20, rank 80) over every head, on
  outputs of 96 images; describing each neuron layer (OMP, 32 texts, over the bank).
Then the time for `--project` images is fixed + per image x count.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from interpret.banks import general_bank  # noqa: E402
from interpret.folders import THUMBNAIL_SIDE  # noqa: E402
from interpret.decompose import decompose_image  # noqa: E402
from interpret.images import load_image  # noqa: E402
from interpret.index import default_layers  # noqa: E402
from interpret.models import load_model  # noqa: E402
from interpret.neurons import OMP_COMPONENTS, NeuronTask, default_neuron_layers, sparse_code  # noqa: E402
from interpret.textspan import textspan  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "data" / "images" / "imagenet-sample"


def seconds(work) -> float:
    started = time.perf_counter()
    work()
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
    photos = sorted(SAMPLES.glob("*.JPEG"))[:args.images]
    bank = general_bank()
    print(f"{torch.get_num_threads()} torch threads, device {args.device}; {len(photos)} photos, bank of {len(bank)}")
    print(f"| model | decode + thumbnail (s/image) | labels: all layers (s/image) | database: last 4 (s/image) | "
          f"neurons: 3 MLP layers (s/image) | per image (s) | bank embeddings (s) | TextSpan, all heads (s) | "
          f"describing the neurons (s) | {args.project:,} images (h) |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def thumbnails():
        for photo in photos:
            load_image(photo, max_side=THUMBNAIL_SIDE).save(io.BytesIO(), format="WEBP", quality=82)

    for name in args.models:
        model = load_model(name, None, args.device)
        decode = seconds(thumbnails) / len(photos)
        batch = model.preprocess_images(photos)
        decompose_image(model, batch[:2], spatial=False)  # warm-up
        labels = sum(seconds(lambda part=batch[i:i + 16]: decompose_image(model, part, spatial=False))
                     for i in range(0, len(batch), 16)) / len(batch)
        layers = default_layers(model)
        database = sum(seconds(lambda part=batch[i:i + 16]: decompose_image(model, part, layers=layers,
                                                                            spatial=False))
                       for i in range(0, len(batch), 16)) / len(batch)
        texts_time = seconds(lambda: [model.encode_texts(list(bank.texts[i:i + 256]))
                                      for i in range(0, len(bank), 256)])
        texts = model.encode_texts(list(bank.texts[:len(bank)]))
        outputs = torch.randn(96, model.geometry.embed_dim, generator=torch.Generator().manual_seed(0))
        one_head = min(seconds(lambda: textspan(outputs, texts, k=20, rank=80)) for _ in range(2))
        heads = model.geometry.layers * model.geometry.heads
        neuron_layers = default_neuron_layers(model)
        neurons = 2 * sum(seconds(lambda part=batch[i:i + 16], layer=layer: NeuronTask(layer)(
            model, [([str(n) for n in range(len(part))], part)], [])) for layer in neuron_layers
            for i in range(0, len(batch), 16)) / len(batch)
        atoms = torch.nn.functional.normalize(texts.float().cpu() - texts.float().cpu().mean(dim=0), dim=-1)
        count = model.tower.mlp_writes(neuron_layers[0]).shape[0]
        describing = len(neuron_layers) * seconds(lambda: sparse_code(
            torch.randn(count, atoms.shape[1], generator=torch.Generator().manual_seed(0)), atoms, OMP_COMPONENTS))
        per_image = decode + labels + database + neurons
        fixed = texts_time + one_head * heads + describing
        print(f"| {name} | {decode:.3f} | {labels:.3f} | {database:.3f} | {neurons:.3f} | {per_image:.3f} | "
              f"{texts_time:.0f} | {one_head * heads:.0f} | {describing:.0f} | "
              f"{(fixed + per_image * args.project) / 3600:.1f} |", flush=True)


if __name__ == "__main__":
    main()
