"""Truth check of mutual knowledge (the paper's protocol) on the toy world, with two descriptor sets that differ in
form, and the per-model table of the toy model against random-init ViT-B-32.

    python benchmarks/toy_mutual.py [--images 200] [--per-class 4]

1. Single-object evaluation scenes (never trained on), classes "a {colour} {shape}" (24), for each descriptor set
   ('grammar': "something {colour}", "a {shape}"; 'phrasings': "{colour}", "{shape}", "something {colour}",
   "a {shape} shape"): the share of images whose shared concepts name the object's colour and its shape, whose
   most important visual concept lies on the object, and the accuracy, mean MI, MI AUC and deletion AUC
   (`interpret.toy.evaluate.mutual_truth`), with the default marker and, for comparison, the paper's red one.
2. `evaluate_model` (class-level analysis) for the toy model and random-init ViT-B-32 on the same toy scenes by
   class: top-1, MI, MI AUC, deletion AUC, and top-1 with the shared descriptors added to the class prompts.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

from interpret import mutual  # noqa: E402
from interpret.models import load_model  # noqa: E402
from interpret.toy.evaluate import TOY_DESCRIPTOR_FORMS, mutual_truth, toy_class_samples, toy_descriptors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--per-class", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    toy = load_model("toy")
    print(f"## Single objects ({args.images} scenes from seed 97,000)\n")
    columns = ("colour and shape shared", "top concept on the object", "accuracy", "mean MI (bits)", "mean MI AUC",
               "mean deletion AUC")
    print("| descriptors | marker | " + " | ".join(columns) + " | seconds |")
    print("|---|---|" + "---|" * (len(columns) + 1))
    real_default = mutual.default_marker
    for form in TOY_DESCRIPTOR_FORMS:
        for marker in ("white (default for the toy)", "red (the paper's)"):
            if marker.startswith("red"):
                mutual.default_marker = lambda model: mutual.MARKER
            started = time.perf_counter()
            figures = mutual_truth(toy, toy_descriptors(form), count=args.images, seed=97_000)
            mutual.default_marker = real_default
            print(f"| {form} | {marker} | " + " | ".join(f"{figures[c]:.3f}" for c in columns)
                  + f" | {time.perf_counter() - started:.0f} |", flush=True)
    print(f"\n## Per model ({args.per_class} scenes of each of the 24 classes; class-level analysis)\n")
    print("| model | descriptors | top-1 | MI (bits) | MI AUC | deletion AUC | descriptor-boosted top-1 |")
    print("|---|---|---|---|---|---|---|")
    samples = toy_class_samples(args.per_class)
    for model in (toy, load_model("ViT-B-32", None)):
        for form in TOY_DESCRIPTOR_FORMS:
            row = mutual.evaluate_model(model, samples, toy_descriptors(form), per_class=args.per_class)
            print(f"| {row.model} | {form} | {row.accuracy:.3f} | {row.mutual_information:.3f} | {row.mi_auc:.3f} | "
                  f"{row.deletion_auc:.3f} | {row.boosted_accuracy:.3f} |", flush=True)


if __name__ == "__main__":
    main()
