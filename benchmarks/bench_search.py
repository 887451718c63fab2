"""Compressed per-head search: recall@10, latency, bytes per vector and build time of each index kind.

    python benchmarks/bench_search.py [--vectors 1000000] [--queries 1000] [--kinds flat ivf-sq8 ivf-pq hnsw]

Synthetic vectors with the shape of real per-head outputs of ViT-B-16 (`synthetic_head_outputs`): a head's
direct contribution is its 64-dim output mapped linearly into the 512-dim embedding space (through the output
projection, ln_post's scale and the final projection), so the vectors span a 64-dim subspace of 512 dims; their
spectrum decays (variance of the i-th latent direction ~ 1/i) and they come in clusters (images of similar
content), plus a little isotropic noise. Queries are new vectors drawn the same way.

Each kind is searched exactly as `ImageIndex` does (`index.search_index`): flat returns its own scores; the
compressed kinds propose `RERANK` candidates scored exactly from the float16 directions. Per kind: recall@10
against exact float32 search, p50 / p99 latency of one query on one thread, bytes per vector of the index in
memory (the float16 directions that re-ranking reads stay on disk and are memory-mapped, as in a large
database: 1,024 bytes per vector at 512 dims; they sit in the page cache here, a cold disk adds a read per
candidate), and build time (training and adding, both cores).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import faiss  # noqa: E402
import numpy as np  # noqa: E402

from interpret.index import RERANK, _unit, search_index, vector_index  # noqa: E402

DIM, RANK, CLUSTERS = 512, 64, 1000


def synthetic_head_outputs(count: int, seed: int, basis: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """`[count, DIM]` float32 (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    scale = 1 / np.sqrt(np.arange(1, RANK + 1, dtype=np.float32))
    out = np.empty((count, DIM), np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        latent = centres[rng.integers(0, CLUSTERS, n)] + 0.5 * rng.standard_normal((n, RANK), np.float32) * scale
        out[start:start + n] = latent @ basis + 0.01 * rng.standard_normal((n, DIM), np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf-sq8", "ivf-pq", "hnsw"])
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((DIM, RANK)))[0].T.astype(np.float32)  # [RANK, DIM], orthonormal
    centres = (rng.standard_normal((CLUSTERS, RANK)) / np.sqrt(np.arange(1, RANK + 1))).astype(np.float32)
    started = time.perf_counter()
    database = _unit(synthetic_head_outputs(args.vectors, 1, basis, centres))
    queries = _unit(synthetic_head_outputs(args.queries, 2, basis, centres))
    truth = faiss.IndexFlatIP(DIM)
    truth.add(database)
    _, expected = truth.search(queries, 10)
    del truth
    scratch = tempfile.TemporaryDirectory()
    np.save(Path(scratch.name) / "directions.npy", database.astype(np.float16))
    directions = np.load(Path(scratch.name) / "directions.npy", mmap_mode="r")  # as a large database reads them
    print(f"## Compressed per-head search ({args.vectors:,} synthetic vectors of {DIM} dims, rank {RANK}, "
          f"{CLUSTERS} clusters; {args.queries} queries; k = 10; ground truth and data in "
          f"{time.perf_counter() - started:.0f} s)\n")
    print("| index | recall@10 | p50 | p99 | bytes per vector in memory | build |")
    print("|---|---|---|---|---|---|")
    for kind in args.kinds:
        faiss.omp_set_num_threads(2)
        started = time.perf_counter()
        index = vector_index(database, kind)
        built = time.perf_counter() - started
        size = faiss.serialize_index(index).nbytes
        exact = None if kind == "flat" else (lambda rows: directions[rows].astype(np.float32))
        faiss.omp_set_num_threads(1)
        for query in queries[:20]:  # warm up
            search_index(index, query, 10, exact)
        times, hits = [], 0
        for query, truth_rows in zip(queries, expected):
            began = time.perf_counter()
            _, rows = search_index(index, query, 10, exact)
            times.append(time.perf_counter() - began)
            hits += len(set(rows.tolist()) & set(truth_rows.tolist()))
        p50, p99 = (1000 * np.percentile(times, q) for q in (50, 99))
        print(f"| {kind} | {hits / (10 * len(queries)):.3f} | {p50:.2f} ms | {p99:.2f} ms | "
              f"{size / args.vectors:,.1f} | {built:.0f} s |", flush=True)
        del index
    print(f"\nCompressed kinds re-rank {RERANK} candidates from the float16 directions (on disk, memory-mapped "
          f"in a large database: {2 * DIM} bytes per vector).")


if __name__ == "__main__":
    main()
