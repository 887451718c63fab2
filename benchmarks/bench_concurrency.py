"""What serialising forward-mode AD costs: interactions one after another vs from several threads at once.

    python benchmarks/bench_concurrency.py [--models toy ViT-B-32] [--requests 8] [--threads 4] [--steps 10]

PyTorch keeps forward-mode AD levels in one table per process, so `interpret.interact` computes tangents under a
lock (`FORWARD_AD_LOCK`); the towers' forward passes, loading and scoring run outside it. For each model this
prints the time of one interaction alone and the share of it spent under the lock, then the wall time of
`--requests` interactions run one after another and from `--threads` threads at once (side by side in one run),
and checks that every threaded answer equals the one-at-a-time answer.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret import interact  # noqa: E402
from interpret.models import load_model  # noqa: E402
from interpret.toy.examples import toy_examples  # noqa: E402


class TimedLock:
    """A lock that adds up the time it is held."""

    def __init__(self):
        self._lock = threading.Lock()
        self.held = 0.0
        self._since = 0.0

    def __enter__(self):
        self._lock.acquire()
        self._since = time.perf_counter()

    def __exit__(self, *exc):
        self.held += time.perf_counter() - self._since
        self._lock.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["toy", "ViT-B-32"])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    examples = toy_examples()
    print(f"{torch.get_num_threads()} torch threads; {args.requests} interactions, {args.steps} steps, midpoint rule")
    print("| model | layers | one alone (s) | under the lock | one after another (s) | "
          f"{args.threads} threads (s) | speed-up | answers equal |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model = load_model(name)
        for layers in ((-1, -1), (2, 0)):
            jobs = [(examples[i % len(examples)][0], examples[i % len(examples)][1]) for i in range(args.requests)]

            def run(job):
                return interact.interaction_map(model, job[0], job[1], *layers, steps=args.steps)

            run(jobs[0])  # warm-up
            timed = TimedLock()
            interact.FORWARD_AD_LOCK, original = timed, interact.FORWARD_AD_LOCK
            alone = []
            for job in jobs[:3]:
                started = time.perf_counter()
                run(job)
                alone.append(time.perf_counter() - started)
            share = timed.held / sum(alone)
            interact.FORWARD_AD_LOCK = original
            started = time.perf_counter()
            expected = [run(job) for job in jobs]
            sequential = time.perf_counter() - started
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.threads) as pool:
                together = list(pool.map(run, jobs))
            threaded = time.perf_counter() - started
            equal = all(torch.allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6) for a, b in zip(together, expected))
            print(f"| {model.label} | {layers[0]}, {layers[1]} | {statistics.median(alone):.3f} | {share:.0%} | "
                  f"{sequential:.2f} | {threaded:.2f} | {sequential / threaded:.2f}x | {equal} |")


if __name__ == "__main__":
    main()
