"""Truth check of the neurons' second-order lens on the toy models: each MLP layer's neuron directions over the toy
database (600 scenes), described with the toy bank; how often a large-effect neuron's property label is the attribute
its top images share beyond chance; and what mean-ablating the neurons labelled colour (shape) in the forward pass
costs colour and shape accuracy, against as many random neurons of the same layer.

    python benchmarks/toy_neurons.py [--model toy|toy-pooled] [--layers 0 1 2] [--count 300]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.models import load_model  # noqa: E402
from interpret.neurons import default_neuron_layers, stored_directions  # noqa: E402
from interpret.toy.evaluate import neuron_ablation, neuron_label_agreement  # noqa: E402
from interpret.toy.examples import DATABASE_SEED, DATABASE_SIZE  # noqa: E402
from interpret.toy.train import toy_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy", choices=("toy", "toy-pooled"))
    parser.add_argument("--layers", type=int, nargs="+", help="MLP layers (default: the three before the last)")
    parser.add_argument("--count", type=int, default=300, help="single-object scenes for the accuracies")
    args = parser.parse_args()
    model = load_model(args.model)
    objects = {f"scene-{DATABASE_SEED + i}.png": toy_scene(DATABASE_SEED + i).objects for i in range(DATABASE_SIZE)}
    print(f"{model.label}: neuron directions over the toy database ({DATABASE_SIZE} scenes, top 100 each), toy bank\n")
    print("layer | neurons | labels | large-effect neurons whose top images share an attribute | label = that "
          "attribute | chance | seconds")
    print("--- | --- | --- | --- | --- | --- | ---")
    ablations, together = {}, {"colour": {}, "shape": {}}
    for layer in args.layers or default_neuron_layers(model):
        started = time.monotonic()
        directions = stored_directions(model, layer)
        seconds = time.monotonic() - started
        counts: dict[str, int] = {}
        for name, _ in directions.labels:
            counts[name] = counts.get(name, 0) + 1
        agreement = neuron_label_agreement(directions, objects)
        print(f"{layer} | {len(directions.labels)} | {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))} | "
              f"{agreement['neurons']} | {agreement['agree']} ({agreement['rate']:.2f}) | {agreement['chance']:.2f} | "
              f"{seconds:.1f}")
        for prop in together:
            together[prop][layer] = [n for n, (name, _) in enumerate(directions.labels) if name == prop]
        ablations[str(layer)] = neuron_ablation(model, {prop: {layer: together[prop][layer]} for prop in together},
                                                count=args.count)
    ablations["all three"] = neuron_ablation(model, together, count=args.count)
    print(f"\nmean ablation in the forward pass ({args.count} single-object scenes; random: 3 draws of as many "
          "neurons of the same layers; margin: the true prompt's cosine score over the best other's)\n")
    print("layers | ablated | neurons | colour acc | colour margin | shape acc | shape margin")
    print("--- | --- | --- | --- | --- | --- | ---")
    for layers, rows in ablations.items():
        for row in rows:
            print(f"{layers} | {row['ablated']} | {row['neurons']} | {row['colour']:.3f} | {row['colour margin']:.4f} | "
                  f"{row['shape']:.3f} | {row['shape margin']:.4f}")


if __name__ == "__main__":
    main()
