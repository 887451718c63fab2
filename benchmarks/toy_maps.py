"""The faithfulness table's checks on both toy models beyond `python -m interpret faithfulness --models toy toy-pooled`:
the attention-pooled toy's decomposition maps of the heads alone (the default before every part was mapped), and a
held-out check: scenes from seeds and texts in phrasings that no test of the project uses, every method.

    python benchmarks/toy_maps.py [--count 200] [--seed 5300000]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.explanations import METHODS  # noqa: E402
from interpret.faithfulness import HELD_OUT_PHRASINGS, evaluate_maps, toy_samples  # noqa: E402
from interpret.models import load_model  # noqa: E402

SCORES = ("pointing", "multi-object pointing", "mIoU", "pixel accuracy", "deletion AUC (mean)",
          "insertion AUC (mean)")


def table(title: str, rows: dict) -> None:
    print(f"\n{title}\n\n| method | " + " | ".join(SCORES) + " |\n|---|" + "---|" * len(SCORES))
    for method, row in rows.items():
        print(f"| {method} | " + " | ".join("-" if math.isnan(row[key]) else f"{row[key]:.3f}" for key in SCORES)
              + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="single-object and multi-object scenes, each")
    parser.add_argument("--seed", type=int, default=5_300_000, help="the held-out scenes' first seed")
    args = parser.parse_args()
    pooled = load_model("toy-pooled")
    heads_only = {"decomposition": {"parts": "heads"}, "decomposition-relative": {"parts": "heads"}}
    rows = evaluate_maps(pooled, toy_samples(args.count, args.count), list(heads_only), options=heads_only)
    table(f"{pooled.label}, the heads alone ({args.count} + {args.count} scenes of the faithfulness table)",
          {f"{method}, heads only": row for method, row in rows.items()})
    for name in ("toy", "toy-pooled"):
        model = load_model(name)
        samples = toy_samples(args.count, args.count, seed=args.seed, phrasings=HELD_OUT_PHRASINGS)
        table(f"{model.label}, held out: {args.count} + {args.count} scenes from seed {args.seed}, phrasings "
              f"{', '.join(HELD_OUT_PHRASINGS)}", evaluate_maps(model, samples, list(METHODS)))


if __name__ == "__main__":
    main()
