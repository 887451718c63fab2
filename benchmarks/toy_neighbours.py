"""Truth check of property neighbours on the toy world: do colour-property neighbours share the query's colour,
and shape-property neighbours its shape?

    python benchmarks/toy_neighbours.py [--database 1000] [--queries 200] [--k 10]

A database of single-object toy scenes and fresh single-object query scenes (evaluation seeds, never trained on,
disjoint from each other). Head labels: TextSpan with the toy bank over 2,000 toy scenes (as the app builds
them). For each search (colour heads, shape heads, and the whole embedding for comparison) the table gives
precision@k for "same colour" and "same shape" (a neighbour counts when its object has the query's colour, or
shape), averaged over the queries.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.banks import toy_bank  # noqa: E402
from interpret.index import ImageIndex, build_index  # noqa: E402
from interpret.models import load_model  # noqa: E402
from interpret.textspan import describe_heads  # noqa: E402
from interpret.toy.train import toy_images, toy_scene  # noqa: E402

DATABASE_SEED, QUERY_SEED = 900_000, 950_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", type=int, default=1000, help="single-object scenes in the database")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    model = load_model("toy")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        truth = {}
        (scratch / "images").mkdir()
        for i in range(args.database):
            scene = toy_scene(DATABASE_SEED + i, count=1)
            path = scratch / "images" / f"{i:05d}.png"
            scene.image.save(path)
            truth[path.name] = scene.objects[0]
        build_index(model, scratch / "images", scratch / "db", progress=False)
        atlas = describe_heads(model, toy_images(2000), toy_bank(), progress=False)
        database = ImageIndex.open(scratch / "db", model)
        queries = [toy_scene(QUERY_SEED + i, count=1) for i in range(args.queries)]
        searches = {
            "colour heads": lambda image: database.property_neighbours(image, "colour", args.k, atlas=atlas),
            "shape heads": lambda image: database.property_neighbours(image, "shape", args.k, atlas=atlas),
            "whole embedding": lambda image: database.neighbours(image, args.k),
        }
        print(f"{args.database} single-object database scenes, {args.queries} fresh queries, k = {args.k}\n")
        print(f"search | heads | same colour P@{args.k} | same shape P@{args.k}")
        print("--- | --- | --- | ---")
        for name, search in searches.items():
            colour = shape = 0.0
            for scene in queries:
                query = scene.objects[0]
                found = [truth[path.name] for path, _ in search(scene.image)]
                colour += sum(obj.colour == query.colour for obj in found) / len(found)
                shape += sum(obj.shape == query.shape for obj in found) / len(found)
            prop = name.split()[0]
            heads = len(database.property_heads(prop, atlas)) if prop in ("colour", "shape") else "all"
            print(f"{name} | {heads} | {colour / len(queries):.3f} | {shape / len(queries):.3f}")
        print("\nchance: same colour 1/6 = 0.167, same shape 1/4 = 0.250")


if __name__ == "__main__":
    main()
