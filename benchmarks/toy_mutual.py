"""Truth check of mutual knowledge on the toy world: single-object evaluation scenes (never trained on), classes
"a {colour} {shape}" (24), descriptors "something {colour}" and "a {shape}" per class.

    python benchmarks/toy_mutual.py [--images 100] [--parts 2 3 4]

Columns are `interpret.toy.evaluate.mutual_truth`'s, for each number of parts and both ways of embedding a part
('prompts': the part alone on the image's mean colour through the image encoder; 'contributions': the sum of
its patches' direct contributions, no extra forward pass).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

from interpret.models import load_model  # noqa: E402
from interpret.mutual import METHODS  # noqa: E402
from interpret.toy.evaluate import mutual_truth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--parts", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model("toy")
    print(f"{args.images} single-object scenes\n")
    print("| parts | method | shared both | object part drops most | accuracy | mean score | mean AUC | s per image |")
    print("|---|---|---|---|---|---|---|---|")
    for parts in args.parts:
        for method in METHODS:
            start = time.perf_counter()
            f = mutual_truth(model, args.images, parts, method)
            seconds = (time.perf_counter() - start) / args.images
            print(f"| {parts} | {method} | {f['shared both']:.3f} | {f['object part drops most']:.3f} | "
                  f"{f['accuracy']:.3f} | {f['mean score']:.3f} | {f['mean AUC']:.3f} | {seconds:.3f} |", flush=True)


if __name__ == "__main__":
    main()
