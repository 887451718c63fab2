"""Truth check of sparse-autoencoder features on the toy models: an SAE trained on each layer's token states (toy
scenes; saev's recipe: TopK k=32 with AuxK, 16 x width features), its reconstruction on other scenes; then, on the
layer given, for each of the 6 colours and 4 shapes the feature whose activation on an object's patches tells that
value apart (chosen on 300 scenes, AUROC on 300 others; beside it, the same with a feature's largest activation
over the object's patches, and a linear probe's on the object's mean state: the most one direction can do),
whether its name from the toy bank names it, and what removing each colour's feature
costs 'something {colour}' against a random feature of about its frequency.

    python benchmarks/toy_features.py [--model toy|toy-pooled] [--layers 0 1 2 3] [--truth-layer 1] [--tokens N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.dictionaries import FeatureAtlas, Dictionary, train_features  # noqa: E402
from interpret.models import load_model  # noqa: E402
from interpret.toy.evaluate import feature_removal, feature_truth, probe_truth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy", choices=("toy", "toy-pooled"))
    parser.add_argument("--layers", type=int, nargs="+", help="blocks to train an SAE on (default: every block)")
    parser.add_argument("--truth-layer", type=int, default=1, help="the block whose features are checked")
    parser.add_argument("--tokens", type=int, default=1_000_000)
    args = parser.parse_args()
    model = load_model(args.model)
    layers = args.layers or list(range(model.geometry.layers))
    print(f"{model.label}: SAEs on the stream after each block ({args.tokens:,} tokens of fresh toy scenes each; "
          "reconstruction on 1,000 other scenes)\n\nblock | explained variance | L0 | dead features | tokens/s")
    print("--- | --- | --- | --- | ---")
    with tempfile.TemporaryDirectory() as scratch:
        for layer in layers:
            report, folder = train_features(model, layer, tokens=args.tokens, out=scratch, progress=False)
            print(f"{layer} | {report.explained_variance:.3f} | {report.l0:.1f} | {report.dead} of {report.features} "
                  f"| {report.tokens_per_second:,.0f}")
        folder = Path(scratch) / "features" / f"layer-{args.truth_layer:02d}"
        if not folder.is_dir():
            train_features(model, args.truth_layer, tokens=args.tokens, out=scratch, progress=False)
        sae, _ = Dictionary.load(folder)
        atlas = FeatureAtlas.load(folder)
        truth = feature_truth(model, sae, atlas)
        by_peak = feature_truth(model, sae, atlas, aggregate="max")
        probes = probe_truth(model, args.truth_layer)
        print(f"\nblock {args.truth_layer}: each value's feature (chosen on 300 scenes; AUROC on 300 others)\n")
        print("value | feature | AUROC | by its peak on the object: feature, AUROC | linear probe's AUROC | "
              "its name (toy bank) | names the value")
        print("--- | --- | --- | --- | --- | --- | ---")
        for value, row in truth.items():
            print(f"{value} | {row['feature']} | {row['auroc']:.3f} | {by_peak[value]['feature']}, "
                  f"{by_peak[value]['auroc']:.3f} | {probes[value]:.3f} | {row['name']} | "
                  f"{'yes' if row['named'] else 'no'}")
        named = sum(row["named"] for row in truth.values())
        passed = sum(row["auroc"] >= 0.9 for row in truth.values())
        peaks = sum(row["auroc"] >= 0.9 for row in by_peak.values())
        print(f"\n{passed} of {len(truth)} values have a feature with AUROC >= 0.9 ({peaks} by its peak); {named} of "
              f"{len(truth)} are named by their feature")
        removal = feature_removal(model, sae, atlas, truth)
        print("\nremoving a colour's feature (every token where it fires), 'something {colour}' on scenes of that "
              "colour\n\ncolour | feature | score | drop | drop, a random feature of its frequency (3 draws)")
        print("--- | --- | --- | --- | ---")
        for colour, row in removal.items():
            print(f"{colour} | {row['feature']} | {row['score']:+.4f} | {row['drop']:+.4f} | {row['random drop']:+.4f}")


if __name__ == "__main__":
    main()
