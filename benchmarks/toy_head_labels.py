"""Truth check of head labels on the toy model: describe every head (TextSpan on toy scenes with the toy bank),
then mean-ablate the heads labelled colour, and those labelled shape (their direct contributions, and their outputs
in the forward pass), and measure colour and shape zero-shot accuracy before and after.

    python benchmarks/toy_head_labels.py [--images 2000] [--count 600] [--model toy|toy-pooled] [--model-dir DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.banks import toy_bank  # noqa: E402
from interpret.models import load_model, local_model  # noqa: E402
from interpret.textspan import describe_heads  # noqa: E402
from interpret.toy.evaluate import mean_ablation  # noqa: E402
from interpret.toy.train import toy_images  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="toy scenes for TextSpan")
    parser.add_argument("--count", type=int, default=600, help="single-object scenes for the accuracies")
    parser.add_argument("--model", default="toy", choices=("toy", "toy-pooled"), help="a bundled toy model")
    parser.add_argument("--model-dir", help="a trained toy model folder (instead of a bundled one)")
    args = parser.parse_args()
    model = local_model(Path(args.model_dir), "toy") if args.model_dir else load_model(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        atlas = describe_heads(model, toy_images(args.images), toy_bank(), out_path=Path(scratch) / "labels.json",
                               progress=False)
    print(f"head labels ({args.images} toy scenes, toy bank, k=20, rank=80): layer.head property (confidence)")
    for layer in range(model.geometry.layers):
        print("  " + "  ".join(f"{layer}.{h} {atlas.get(layer, h).property:<8} ({atlas.get(layer, h).confidence:.2f})"
                               for h in range(model.geometry.heads)))
    for forward, what in ((False, "direct contributions"), (True, "head outputs in the forward pass")):
        print(f"\nmean ablation of {what}, {args.count} single-object scenes")
        print("ablated | heads | colour acc | shape acc")
        print("--- | --- | --- | ---")
        for row in mean_ablation(model, atlas, count=args.count, forward=forward):
            heads = ", ".join(f"{l}.{h}" for l, h in row["heads"]) or "-"
            print(f"{row['ablated']} | {heads} | {row['colour']:.3f} | {row['shape']:.3f}")


if __name__ == "__main__":
    main()
