"""Image database figures: build throughput against plain `encode_image`, per-head query latency, bytes per image.

    python benchmarks/bench_index.py [--images ../shared/data/images/imagenet-sample] [--limit 512]
                                     [--vectors 100000] [--queries 300]

1. Build throughput: `build_index` (random-init ViT-B-32, last 4 layers) against a plain loop of
   load + preprocess + `encode_image` over the same images with the same batch size, in one run, twice each
   (interleaved); the better of the two runs of each is compared.
2. Query latency on one thread: a synthetic per-head index of `--vectors` float16 vectors (ViT-B-32's 512
   dims) written in the database's own format; p50 and p99 over `--queries` searches for k = 10, flat and ivf-pq,
   the FAISS search alone and a whole `text_neighbours` call (text encoding included).
3. Bytes per image of the database built in 1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from interpret.images import list_images, load_image  # noqa: E402
from interpret.index import (FORMAT, MANIFEST, ImageIndex, _signature, _write_data, build_index,  # noqa: E402
                             head_file, write_manifest)
from interpret.models import load_model  # noqa: E402


def plain_encode(model, paths, batch_size: int) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([model.preprocess(load_image(p)) for p in paths[start:start + batch_size]])
            model.model.encode_image(batch)
    return time.perf_counter() - started


def build_throughput(model, source: Path, limit: int, batch_size: int, scratch: Path) -> tuple[float, Path]:
    folder = scratch / "images"
    folder.mkdir()
    paths = list_images(source)[:limit]
    for path in paths:
        os.symlink(path, folder / path.name)
    paths = list_images(folder)
    plain, ours = [], []
    out = scratch / "db"
    for _ in range(2):
        plain.append(plain_encode(model, paths, batch_size))
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        build_index(model, folder, out, batch_size=batch_size, progress=False)
        ours.append(time.perf_counter() - started)
    print(f"## Build throughput ({len(paths)} images of {source.name}, {model.label}, batch {batch_size})\n")
    print("| | seconds (best of 2) | images/s |\n|---|---|---|")
    print(f"| plain encode_image | {min(plain):.2f} | {len(paths) / min(plain):.1f} |")
    print(f"| build_index (last 4 layers) | {min(ours):.2f} | {len(paths) / min(ours):.1f} |")
    print(f"\nthroughput ratio (ours / plain): **{min(plain) / min(ours):.2f}x**  (all runs: plain "
          f"{', '.join(f'{t:.2f}' for t in plain)} s; ours {', '.join(f'{t:.2f}' for t in ours)} s)\n")
    return min(plain) / min(ours), out


def database_size(out: Path) -> None:
    manifest = json.loads((out / MANIFEST).read_text())
    data = out / manifest["data"]
    total = sum(f.stat().st_size for f in data.iterdir())
    heads = sum(f.stat().st_size for f in data.glob("head_*.faiss"))
    count = manifest["count"]
    print(f"## Bytes per image ({count} images, layers {manifest['layers']}, {manifest['heads']} heads, "
          f"dim {manifest['dim']})\n")
    print(f"- all files: {total / count:,.0f} bytes per image ({total / 2**20:.1f} MiB in all)")
    print(f"- head contributions (float16 directions): {heads / count:,.0f} bytes; lengths, embedding, file list: "
          f"{(total - heads) / count:,.0f} bytes\n")


def synthetic_database(model, vectors: int, scratch: Path, kind: str) -> Path:
    """`vectors` random head contributions for heads 0 and 1 of the last layer, in the database format."""
    rng = np.random.default_rng(0)
    layer = model.geometry.layers - 1
    heads = rng.standard_normal((1, 2, vectors, model.geometry.embed_dim), dtype=np.float32)
    embeddings = rng.standard_normal((vectors, model.geometry.embed_dim), dtype=np.float32)
    out = scratch / f"synthetic-{kind}"
    entries = [{"path": f"img{i:06d}.jpg", "stat": [0, 0]} for i in range(vectors)]
    files = _write_data(out / "data", heads, embeddings, entries, (layer,), kind)
    signature = {**_signature(model, (layer,)), "heads": 2}
    manifest = {**signature, "format": FORMAT, "count": vectors, "dtype": "float16", "root": str(scratch),
                "data": "data", "index": kind, "skipped": [], "files": files}
    write_manifest(out, manifest)
    return out


def latency(model, vectors: int, queries: int, scratch: Path) -> None:
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    layer = model.geometry.layers - 1
    rng = np.random.default_rng(1)
    print(f"## Per-head query latency ({vectors:,} database vectors, dim {model.geometry.embed_dim}, k = 10, "
          f"one thread)\n")
    print("| index | search p50 | search p99 | text_neighbours p50 | text_neighbours p99 | build |")
    print("|---|---|---|---|---|---|")
    for kind in ("flat", "ivf-pq"):
        started = time.perf_counter()
        out = synthetic_database(model, vectors, scratch, kind)
        built = time.perf_counter() - started
        database = ImageIndex.open(out, model)
        database.text_neighbours("warm up", layer, 0)
        search, whole = [], []
        for i in range(queries):
            query = torch.from_numpy(rng.standard_normal(model.geometry.embed_dim, dtype=np.float32))
            started = time.perf_counter()
            database._search(head_file(layer, i % 2), query, 10)
            search.append(time.perf_counter() - started)
        for i in range(min(queries, 100)):
            started = time.perf_counter()
            database.text_neighbours(f"a photo of thing number {i}", layer, i % 2, k=10)
            whole.append(time.perf_counter() - started)
        name = {"flat": "exact (flat, float16)", "ivf-pq": "ivf-pq, re-ranked (see bench_search.py)"}[kind]
        ms = [1000 * np.percentile(values, q) for values in (search, whole) for q in (50, 99)]
        print(f"| {name} | {ms[0]:.2f} ms | {ms[1]:.2f} ms | {ms[2]:.1f} ms | {ms[3]:.1f} ms | {built:.1f} s |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(ROOT.parent / "shared/data/images/imagenet-sample"))
    parser.add_argument("--limit", type=int, default=512, help="images for the build throughput")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    model = load_model("ViT-B-32", None)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if Path(args.images).is_dir():
            _, out = build_throughput(model, Path(args.images), args.limit, args.batch_size, scratch)
            database_size(out)
        else:
            print(f"{args.images} not found: build throughput skipped\n")
        latency(model, args.vectors, args.queries, scratch)


if __name__ == "__main__":
    main()
