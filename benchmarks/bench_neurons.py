"""What the neurons' second-order effects cost, side by side in one run, on a random-init ViT-B-32 (the paper's
model: 3,072 neurons a layer).

    python benchmarks/bench_neurons.py [--model ViT-B-32] [--repeats 10] [--images 64 256]

- one image: a plain `encode_image`; every neuron's effect of MLP 9 on the embedding (`second_order_effects(...)
  .effects`, `[1, 3072, 512]`), with the layer's write values kept (warm) and made anew (cold); the same for
  MLP 0 (11 later layers); their parts of one caption's score (`.scores`, no `[N, D]` built);
- a database pass (`neuron_directions`, both passes, top 100): its peak memory above the model's as the number of
  images grows, against what the authors' code stores (`[images x N x D]` float32).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from interpret.models import load_model  # noqa: E402
from interpret.neurons import neuron_directions, second_order_effects, write_values  # noqa: E402


def side_by_side(functions: dict, repeats: int) -> dict[str, float]:
    """Each function once per round, in turn, after a warm-up round: the medians. A function may be a pair
    (untimed setup, timed function)."""
    pairs = {name: function if isinstance(function, tuple) else (lambda: None, function)
             for name, function in functions.items()}
    for setup, function in pairs.values():
        setup()
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, (setup, function) in pairs.items():
            setup()
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--images", type=int, nargs="+", default=[256, 1024],
                        help="database sizes, each at least a block (256 images: what the engines decode at once)")
    args = parser.parse_args()
    model = load_model(args.model, None)
    batch = model.preprocess_images([Image.new("RGB", (224, 224), (200, 120, 40))])
    text = model.encode_texts(["a photo of a dog"])
    layers = model.geometry.layers

    def forget():  # the kept write values of every layer
        model.derived_cache.keep([], [], version=object())

    def warm(layer):  # its write values kept before the timed run
        return lambda: write_values(model, layer), lambda: second_order_effects(model, batch, layer).effects

    def cold(layer):
        return forget, lambda: second_order_effects(model, batch, layer).effects

    with torch.no_grad():
        times = side_by_side({
            "encode_image": lambda: model.model.encode_image(batch),
            f"effects, MLP {layers - 3} (warm)": warm(layers - 3),
            f"effects, MLP {layers - 3} (cold)": cold(layers - 3),
            f"score parts, MLP {layers - 3} (warm)": (lambda: write_values(model, layers - 3),
                                                      lambda: second_order_effects(model, batch, layers - 3).scores(text)),
            "effects, MLP 0 (warm)": warm(0),
            "effects, MLP 0 (cold)": cold(0),
        }, args.repeats)
    plain = times["encode_image"]
    print(f"{model.label}, one 224 px image, {torch.get_num_threads()} threads (medians of {args.repeats})\n")
    print("what | seconds | ratio to encode_image\n--- | --- | ---")
    for name, value in times.items():
        print(f"{name} | {value:.4f} | {value / plain:.2f}")

    print("\ndatabase pass (neuron_directions of MLP 9, top 100, both passes): peak memory of this process\n")
    print("images | seconds | peak memory (MiB) | the authors' store, [images x N x D] float32 (MiB)")
    print("--- | --- | --- | ---")
    width = model.tower.mlp_writes(layers - 3).shape[0]
    with tempfile.TemporaryDirectory() as scratch:
        for count in sorted(args.images):
            folder = Path(scratch) / str(count)
            folder.mkdir()
            generator = torch.Generator().manual_seed(count)
            for index in range(count):
                pixels = (torch.rand(64, 64, 3, generator=generator) * 255).byte().numpy()
                Image.fromarray(pixels).resize((224, 224)).save(folder / f"{index:05d}.png")
            started = time.perf_counter()
            neuron_directions(model, folder, layers - 3, progress=False, batch_size=32)
            print(f"{count} | {time.perf_counter() - started:.1f} | {peak_mib():.0f} | "
                  f"{count * width * model.geometry.embed_dim * 4 / 2**20:,.0f}")
    print(f"\n100,000 images in the authors' store: {100_000 * width * model.geometry.embed_dim * 4 / 2**30:,.0f} GiB")


if __name__ == "__main__":
    main()
