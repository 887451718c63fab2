"""Truth check of transcoders on the toy models: the transcoders the toys ship (one per MLP, trained from one pass
over fresh toy scenes: TopK k=32 with AuxK, 8 x width features, no skip connection), measured on scenes no training
used: for every block the fraction of the MLP output's variance unexplained (FVU), L0 and dead features; the
image-caption cosine score with EVERY MLP replaced by its transcoder (attention and norms free) against the real
one on 200 scenes with their own captions; the colour and shape zero-shot accuracies of the replaced model against
the real one on 600 single-object scenes; and, on one block, each colour's and shape's best feature on an object's
patches (AUROC, chosen on 300 scenes, measured on 300 others) and whether its name says it; and a dictionary of
the readout (an SAE of the class token before the final norm, of the attention pooler's output), where the toys
assemble shape: each value's feature on single-object scenes.

    python benchmarks/toy_transcoders.py [--model toy toy-pooled] [--train] [--tokens 1000000]

`--train` trains the transcoders again first and writes them into the toy's asset folder (float16), as shipped.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.dictionaries import (Dictionary, described, dictionary_folder, evaluate,  # noqa: E402
                                    replaced_embeddings, stored_dictionary, toy_blocks, train_dictionaries_of)
from interpret.models import load_model  # noqa: E402
from interpret.paths import TOY_MODELS  # noqa: E402
from interpret.toy.evaluate import colour_and_shape_accuracy, feature_truth, readout_truth  # noqa: E402
from interpret.toy.train import toy_scene  # noqa: E402

TOY_FEATURES = 1024  # 8 x the toys' width: their world has few things to say; the assets stay small (2 MB a toy)
MEASURE_SEED = 5_200_000  # scenes no training or selection used


def train_shipped(model, tokens: int) -> float:
    """Train the toy's transcoders of every MLP and write them into its asset folder; returns the seconds."""
    layers = list(range(model.geometry.layers))
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        results = train_dictionaries_of(model, "transcoder", layers, tokens=tokens, features=TOY_FEATURES,
                                        out=scratch, progress=True, describe=False)
        seconds = time.monotonic() - started
        for layer, (report, folder) in results.items():
            dictionary, manifest = Dictionary.load(folder)
            target = dictionary_folder(TOY_MODELS[model.name], "transcoder", layer)
            shutil.rmtree(target, ignore_errors=True)
            dictionary.save(target, dtype=torch.float16, model=manifest["model"],
                            weights_sha256=manifest["weights_sha256"], report=manifest["report"])
            print(f"block {layer}: {report.line()} -> {target}")
    return seconds


def measure(model, truth_layer: int) -> None:
    layers = list(range(model.geometry.layers))
    transcoders = {layer: stored_dictionary(model, "transcoder", layer)[0] for layer in layers}
    print(f"\n{model.label}: the shipped transcoders, on 1,000 fresh scenes\n\nblock | FVU | L0 | dead features "
          "(of 1,024; on these scenes)\n--- | --- | --- | ---")
    held = list(toy_blocks(model, "transcoder", layers, 1000, seed=MEASURE_SEED))
    for layer, transcoder in transcoders.items():
        report = evaluate(transcoder, [torch.from_numpy(block[layer]).reshape(-1, block[layer].shape[-1])
                                       for block in held])
        print(f"{layer} | {report.fvu:.3f} | {report.l0:.1f} | {report.dead}")

    scenes = [toy_scene(MEASURE_SEED + 10_000 + i) for i in range(200)]
    texts = F.normalize(model.encode_texts([scene.captions[0] for scene in scenes]).float(), dim=-1)
    real, replaced = [], []
    for start in range(0, len(scenes), 50):
        pictures = [scene.image for scene in scenes[start:start + 50]]
        real.append(F.normalize(model.encode_images(pictures).float(), dim=-1))
        replaced.append(F.normalize(replaced_embeddings(model, pictures, transcoders).cpu(), dim=-1))
    own = torch.arange(len(scenes))
    real_scores = (torch.cat(real) @ texts.T)[own, own]
    replaced_scores = (torch.cat(replaced) @ texts.T)[own, own]
    gap = (replaced_scores - real_scores)
    print(f"\nevery MLP replaced, 200 scenes with their own captions: the real score {real_scores.mean():.4f} on "
          f"average, replaced {replaced_scores.mean():.4f}; mean |difference| {gap.abs().mean():.4f}, largest "
          f"{gap.abs().max():.4f}")

    singles = [toy_scene(MEASURE_SEED + 20_000 + i, count=1) for i in range(600)]
    objects = [scene.objects[0] for scene in singles]
    pictures = [scene.image for scene in singles]
    embeddings = torch.cat([model.encode_images(pictures[i:i + 100]).float() for i in range(0, 600, 100)])
    swapped = torch.cat([replaced_embeddings(model, pictures[i:i + 100], transcoders).cpu()
                         for i in range(0, 600, 100)])
    before = colour_and_shape_accuracy(model, embeddings, objects)
    after = colour_and_shape_accuracy(model, swapped, objects)
    print(f"600 single-object scenes: colour {before['colour']:.3f} real, {after['colour']:.3f} replaced; shape "
          f"{before['shape']:.3f} real, {after['shape']:.3f} replaced")

    transcoder, atlas = described(model, "transcoder", truth_layer)
    truth = feature_truth(model, transcoder, atlas)
    print_truth(f"the transcoder of MLP {truth_layer}: each value's feature on an object's patches (chosen on 300 "
                "scenes, AUROC on 300 others)", truth)


def print_truth(heading: str, truth: dict) -> None:
    """Each value's feature, its AUROC and name, as a table; then how many pass."""
    print(f"\n{heading}\n\nvalue | feature | AUROC | its name (toy bank) | names the value\n--- | --- | --- | --- | ---")
    for value, row in truth.items():
        print(f"{value} | {row['feature']} | {row['auroc']:.3f} | {row['name']} | {'yes' if row['named'] else 'no'}")
    for kind in ("colour", "shape"):
        chosen = [row for row in truth.values() if row["kind"] == kind]
        print(f"{kind}: {sum(row['auroc'] >= 0.9 for row in chosen)} of {len(chosen)} with AUROC >= 0.9, "
              f"{sum(row['named'] for row in chosen)} named by it")


def readout_shapes(model, images: int, features: int, k: int, epochs: int) -> None:
    """A dictionary of the readout (the class token before the final norm; the attention pooler's output): an SAE
    trained on `images` fresh scenes' readout vectors (one an image: held in memory and shown `epochs` times),
    named over the toy database; each value's feature."""
    from interpret.banks import toy_bank
    from interpret.dictionaries import describe_features, train_dictionaries
    from interpret.toy.examples import draw_toy_database

    last = model.geometry.layers - 1
    started = time.monotonic()
    rows = [block[last] for block in toy_blocks(model, "readout", [last], images)]
    held = [torch.from_numpy(block[last][:, 0]) for block in toy_blocks(model, "readout", [last], 1000,
                                                                           seed=MEASURE_SEED + 40_000)]
    dictionary, _ = train_dictionaries(({last: block} for _ in range(epochs) for block in rows), "readout",
                                       model.geometry.width, [last], batch_size=256, warmup=100, features=features,
                                       k=k, progress=False)[last]
    seconds = time.monotonic() - started
    report = evaluate(dictionary, held)
    atlas = describe_features(model, dictionary, draw_toy_database(model.index_dir / "images"), toy_bank(),
                              progress=False)
    truth = readout_truth(model, dictionary, atlas)
    print_truth(f"{model.label}: an SAE of the readout ({features} features, k = {k}; {images:,} fresh scenes seen "
                f"{epochs} times, {seconds:.0f} s; explains {report.explained_variance:.3f} of 1,000 other scenes' "
                "readout vectors): each value's feature on single-object scenes (chosen on 300, AUROC on 300 others)",
                truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["toy", "toy-pooled"], choices=("toy", "toy-pooled"))
    parser.add_argument("--train", action="store_true", help="train the shipped transcoders again first")
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--truth-layer", type=int, default=1)
    parser.add_argument("--readout-images", type=int, default=20_000, help="fresh scenes the readout's SAE trains on")
    parser.add_argument("--readout-features", type=int, default=32)
    parser.add_argument("--readout-k", type=int, default=4)
    parser.add_argument("--readout-epochs", type=int, default=10)
    parser.add_argument("--only-readout", action="store_true", help="the readout's dictionary alone")
    args = parser.parse_args()
    for name in args.model:
        model = load_model(name)
        if args.train:
            seconds = train_shipped(model, args.tokens)
            print(f"{model.label}: 4 transcoders from one pass over {args.tokens:,} tokens in {seconds:.0f} s")
        if not args.only_readout:
            measure(model, args.truth_layer)
        readout_shapes(model, args.readout_images, args.readout_features, args.readout_k, args.readout_epochs)


if __name__ == "__main__":
    main()
