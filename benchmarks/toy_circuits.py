"""Attribution graphs on the toy models, measured where the truth is known, and what they cost.

Truth (`--truth`): two-object scenes no training or tuning used, a text naming one of the objects in one of four
phrasings ('something {colour}', 'a {shape}', 'a {colour} {shape}', '{colour}'); the graph through the shipped
transcoders (1,000 features kept, circuit-tracer's thresholds): its replacement and completeness scores; Pearson's r
between the score changes the graph predicts and those measured in the real forward pass for its 30 most
influential features; the share of the embedding nodes' influence that starts at the named object's patches (those
it covers at least half of), against the share of the grid those patches are and against the decomposition map's
(|map| of every part) share there; whether the most influential named feature is named by the colour, for
'something {colour}'; and, on a few scenes with every active feature kept, exactness (edges + bias against each
target's value).

Cost (`--cost`): a graph's seconds and the process's peak memory growth on the toys, and on random-init ViT-B-32 and
ViT-B-16 with a random TopK transcoder (16 x 768 features, k = 32) on every MLP, as the features kept grow.

    python benchmarks/toy_circuits.py [--truth] [--cost] [--scenes 40]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.circuits import attribution_graph, check_interventions  # noqa: E402
from interpret.dictionaries import Dictionary, DictionaryConfig, described  # noqa: E402
from interpret.models import load_model  # noqa: E402
from interpret.segment import ImageMaps  # noqa: E402
from interpret.toy.evaluate import _patch_cover  # noqa: E402
from interpret.toy.train import toy_scene  # noqa: E402

SEED = 6_200_000  # two-object scenes no training, tuning or other check used
PHRASINGS = ("something {colour}", "a {shape}", "a {colour} {shape}", "{colour}")


def truth(name: str, scenes: int, exact_scenes: int) -> None:
    model = load_model(name)
    names = {}
    for layer in range(model.geometry.layers):
        _, atlas = described(model, "transcoder", layer)
        names.update({(layer, f): label[0] for f, label in enumerate(atlas.labels or [])})
    rows = []
    for i in range(scenes):
        scene = toy_scene(SEED + i, count=2)
        target = scene.objects[i % 2]
        phrasing = PHRASINGS[i % len(PHRASINGS)]
        text = phrasing.format(colour=target.colour, shape=target.shape)
        graph = attribution_graph(model, scene.image, text)
        _, _, r = check_interventions(model, scene.image, graph)
        cover = _patch_cover(model, scene.masks[i % 2]).flatten() >= 0.5
        prefix = model.geometry.prefix
        embeddings = graph.kind_slice("embedding")
        influence = graph.node_influence[embeddings][prefix:]
        share = float(influence[cover].sum() / influence.sum().clamp(min=1e-12))
        grid = ImageMaps(model, scene.image).topic(text).grid.flatten().abs()
        decomposition = float(grid[cover].sum() / grid.sum().clamp(min=1e-12))
        named = None
        if phrasing == "something {colour}":
            ranked = sorted((node for node in graph.nodes if node.kind == "feature" and
                             names.get((node.layer, node.feature))), key=lambda node: -abs(node.effect))
            named = bool(ranked) and target.colour in names[(ranked[0].layer, ranked[0].feature)].split()
        rows.append({"replacement": graph.scores["replacement"], "completeness": graph.scores["completeness"],
                     "r": r, "share": share, "area": float(cover.float().mean()), "decomposition": decomposition,
                     "named": named, "kept": graph.scores["nodes kept"]})
    errors = []
    for i in range(exact_scenes):
        scene = toy_scene(SEED + 10_000 + i, count=2)
        graph = attribution_graph(model, scene.image, f"something {scene.objects[0].colour}", max_feature_nodes=None)
        targets = list(range(graph.kind_slice("feature").stop)) + [graph.score_index]
        errors.append(float((graph.adjacency[targets].sum(1) + graph.biases[targets] - graph.values[targets])
                            .abs().max()))

    def mean(key: str) -> str:
        values = [row[key] for row in rows]
        return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    named = [row["named"] for row in rows if row["named"] is not None]
    print(f"\n{model.label}, {scenes} two-object scenes, the text naming one object (four phrasings): mean (range)\n")
    print(f"| replacement score | {mean('replacement')} |\n| completeness score | {mean('completeness')} |")
    print(f"| Pearson r, predicted vs measured score changes (30 features) | {mean('r')} |")
    print(f"| the embedding nodes' influence from the named object's patches | {mean('share')} |")
    print(f"| the share of the grid those patches are | {mean('area')} |")
    print(f"| the decomposition map's share there | {mean('decomposition')} |")
    print(f"| 'something {{colour}}': the most influential named feature named by the colour | {sum(named)} of "
          f"{len(named)} |\n| nodes kept | {mean('kept')} |")
    print(f"| exactness, every active feature kept ({exact_scenes} scenes): largest |edges + bias - value| | "
          f"{max(errors):.1e} |")


def random_transcoders(model, features: int, k: int = 32) -> dict:
    generator = torch.Generator().manual_seed(0)
    width = model.geometry.width
    transcoders = {}
    for layer in range(model.geometry.layers):
        transcoder = Dictionary(DictionaryConfig(width, features, layer, "topk", k, kind="transcoder"))
        with torch.no_grad():
            transcoder.W_enc.copy_(torch.randn(width, features, generator=generator) / width ** 0.5)
            transcoder.W_dec.copy_(torch.randn(features, width, generator=generator) / width ** 0.5)
        transcoders[layer] = transcoder.eval()
    return transcoders


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cost() -> None:
    from interpret.toy.examples import toy_examples

    print("\nmodel | features active | features kept (most) | seconds | peak memory growth (MiB) | nodes / edges "
          "after pruning\n--- | --- | --- | --- | --- | ---")
    path = toy_examples()[1][0]
    for name in ("toy", "toy-pooled"):
        model = load_model(name)
        attribution_graph(model, path, "something blue", max_feature_nodes=100)  # warm
        for kept in (300, 1000):
            before = peak_mib()
            started = time.perf_counter()
            graph = attribution_graph(model, path, "something blue", max_feature_nodes=kept)
            seconds = time.perf_counter() - started
            print(f"{model.label} | {graph.features_active:,} | {kept:,} | {seconds:.2f} | {peak_mib() - before:.0f} | "
                  f"{graph.scores['nodes kept']} / {graph.scores['edges kept']:,}")
    for name in ("ViT-B-32", "ViT-B-16"):
        model = load_model(name, None, "cpu")
        transcoders = random_transcoders(model, 16 * model.geometry.width)
        picture = torch.randn(3, *model.geometry.image_size)
        for kept in ((300, 1000, 3000) if name == "ViT-B-32" else (1000,)):
            before = peak_mib()
            started = time.perf_counter()
            graph = attribution_graph(model, picture, "a photo of a dog", transcoders=transcoders,
                                      max_feature_nodes=kept)
            seconds = time.perf_counter() - started
            print(f"{model.label} | {graph.features_active:,} | {kept:,} | {seconds:.1f} | {peak_mib() - before:.0f} | "
                  f"{graph.scores['nodes kept']} / {graph.scores['edges kept']:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--truth", action="store_true")
    parser.add_argument("--cost", action="store_true")
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--exact-scenes", type=int, default=2)
    parser.add_argument("--model", nargs="+", default=["toy", "toy-pooled"])
    args = parser.parse_args()
    if args.truth or not args.cost:
        for name in args.model:
            truth(name, args.scenes, args.exact_scenes)
    if args.cost or not args.truth:
        cost()


if __name__ == "__main__":
    main()
