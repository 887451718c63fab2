"""Zero-shot quality of the bundled toy CLIP on freshly drawn held-out scenes (the table in issue notes).

    python benchmarks/toy_quality.py [--count 600] [--model toy|toy-pooled] [--model-dir DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.models import load_model, local_model  # noqa: E402
from interpret.toy.evaluate import zero_shot_accuracy  # noqa: E402

BARS = {"colour (6-way)": 0.95, "shape (4-way)": 0.95, "position (9-way)": 0.8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=600, help="single-object scenes (two-object: half as many)")
    parser.add_argument("--model", default="toy", choices=("toy", "toy-pooled"), help="a bundled toy model")
    parser.add_argument("--model-dir", help="a trained toy model folder (instead of a bundled one)")
    args = parser.parse_args()
    model = local_model(Path(args.model_dir)) if args.model_dir else load_model(args.model)
    print(f"{args.count} single-object and {args.count // 2} two-object scenes (evaluation seeds, never trained on)\n")
    print("task | accuracy | bar")
    print("--- | --- | ---")
    for task, value in zero_shot_accuracy(model, count=args.count).items():
        bar = BARS.get(task)
        verdict = "" if bar is None else f">= {bar} {'ok' if value >= bar else 'MISSED'}"
        print(f"{task} | {value:.3f} | {verdict}")


if __name__ == "__main__":
    main()
