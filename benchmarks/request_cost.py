"""What the most expensive request each handler allows costs: seconds and memory, on the toy model and on
random-init ViT-B-32 (issue 31: every allowed request under 5 s and +300 MiB; one over its budget is refused
before any work, and the refusal is timed too).

    python benchmarks/request_cost.py [--models "toy (bundled)" "ViT-B-32 / random init"] [--repeat 2]

In-process (the handlers the endpoints run), one request at a time, caches of recent results off. For each
request: wall time the first time and again (the model's kept text embeddings make a repeated descriptor file
cheaper), the resident memory's peak growth during it (sampled every 10 ms) and what is still held after it (after
the handler's own memory release; the worst run). A request that is refused shows its message's start.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("INTERPRET_RESULT_CACHE_MB", "0")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402

from interpret.explanations import METHODS  # noqa: E402
from interpret.limits import MAX_PARTS, MAX_STEPS, MAX_TEXTS, MAX_TOP_HEADS  # noqa: E402
from interpret.toy.examples import toy_examples  # noqa: E402
from interpret.ui import compare, heads, interactions, mutual, topic  # noqa: E402
from interpret.ui.common import model_for, release_memory  # noqa: E402

EXAMPLE = toy_examples()[0][0]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measured(run) -> tuple[float, float, float, str]:
    """(seconds, peak growth MiB, held after MiB, outcome) of `run()`."""
    release_memory()
    before, peak, done = rss_mib(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        run()
        outcome = "answered"
    except gr.Error as error:
        outcome = "refused: " + error.message[:70]
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    release_memory()
    return seconds, max(peak[0], rss_mib()) - before, rss_mib() - before, outcome


def descriptor_file(folder: Path, classes: int, per_class: int) -> str:
    path = folder / f"descriptors-{classes}x{per_class}.json"
    words = ["striped", "furry", "metal", "wooden", "round", "tall", "glossy", "spotted", "winged", "tiny"]
    path.write_text(json.dumps({f"class {c}": [f"{words[d % 10]} {words[(c + d) % 10]} thing {c}-{d}"
                                               for d in range(per_class)] for c in range(classes)}))
    return str(path)


def requests(label: str, folder: Path) -> dict:
    relative = "\n".join(f"a {word} shape" for word in range(MAX_TEXTS))
    return {
        "heads, top 100": lambda: heads.run_heads(label, EXAMPLE, "a red circle", MAX_TOP_HEADS, ""),
        f"topic map, {MAX_TEXTS} relative texts": lambda: topic.run_topic(label, EXAMPLE, "something red", "all",
                                                                           0.6, relative),
        f"interaction, layers 0/0, {MAX_STEPS} steps": lambda: interactions.run_interaction(
            label, EXAMPLE, "a red circle on the left of a blue square", 0, 0, MAX_STEPS),
        "compare, every method": lambda: compare.run_compare(label, EXAMPLE, "a red circle", tuple(METHODS)),
        f"mutual, toy classes, {MAX_PARTS} concepts": lambda: mutual.run_mutual(label, EXAMPLE, concepts=MAX_PARTS),
        "mutual, 100 x 5 descriptors": lambda: mutual.run_mutual(
            label, EXAMPLE, mutual.OWN_CLASSES, descriptor_file(folder, 100, 5), "a photo of a {}", 6),
        "mutual, 1,000 x 5 descriptors": lambda: mutual.run_mutual(
            label, EXAMPLE, mutual.OWN_CLASSES, descriptor_file(folder, 1000, 5), "a photo of a {}", 6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["toy (bundled)", "ViT-B-32 / random init"])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each request (at least 2)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="interpret-cost-"))
    print("| model | request | seconds | again (s) | peak growth (MiB) | held after (MiB) | outcome |\n"
          "|---|---|---|---|---|---|---|")
    for label in args.models:
        model_for(label)  # loaded before anything is measured
        for name, run in requests(label, folder).items():
            runs = [measured(run) for _ in range(max(2, args.repeat))]
            peak, held = (max(values) for values in list(zip(*runs))[1:3])
            print(f"| {label} | {name} | {runs[0][0]:.2f} | {runs[-1][0]:.2f} | {peak:+.0f} | {held:+.0f} | "
                  f"{runs[-1][3]} |", flush=True)


if __name__ == "__main__":
    main()
