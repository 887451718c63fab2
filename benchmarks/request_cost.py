"""What the most expensive request each handler allows costs: seconds and memory, on the toy model and on
random-init ViT-B-32 (issue 31: every allowed request under 5 s and +300 MiB; one over its budget is refused
before any work, and the refusal is timed too).

    python benchmarks/request_cost.py [--models "toy (bundled)" "ViT-B-32 / random init"] [--repeat 2] [--door]

With --door, as a client waits for it: `python app.py` on 127.0.0.1 (caches off), each request sent through the
REST API as Gradio's API page shows it (its picture and descriptor file uploaded first, every time), its answer
read from the event's stream; the server's memory sampled every 50 ms. Without, in-process (the handlers the
endpoints run), one request at a time, caches of recent results off. For each
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


def door_requests(label: str, folder: Path) -> dict:
    """The same requests as (api name, its arguments with "IMAGE" and "FILE:<path>" for what is uploaded)."""
    relative = "\n".join(f"a {word} shape " + "x" * 980 for word in range(MAX_TEXTS))  # 64 texts of ~1,000 chars
    return {
        "heads, top 100": ("heads", [label, "IMAGE", "a red circle", MAX_TOP_HEADS, ""]),
        f"topic map, {MAX_TEXTS} relative texts of 1,000 characters": (
            "topic_segmentation", [label, "IMAGE", "something red", "all", 0.6, relative, "all"]),
        f"interaction, layers 0/0, {MAX_STEPS} steps": (
            "interaction", [label, "IMAGE", "a red circle on the left of a blue square", 0, 0, MAX_STEPS, "midpoint",
                            "", "", 0.6]),
        "compare, every method": ("compare_explanations", [label, "IMAGE", "a red circle", list(METHODS), "auto",
                                                           0.6]),
        "mutual, 100 x 50 descriptors (1 MB)": ("mutual_knowledge", [
            label, "IMAGE", mutual.OWN_CLASSES, "FILE:" + descriptor_file(folder, 100, 50), "a photo of a {}", 6]),
        "mutual, 1,000 x 5 descriptors": ("mutual_knowledge", [
            label, "IMAGE", mutual.OWN_CLASSES, "FILE:" + descriptor_file(folder, 1000, 5), "a photo of a {}", 6]),
    }


def through_the_door(labels: list[str], repeat: int, folder: Path) -> None:
    """Each request as a client sends it (see the module's text)."""
    import urllib.request

    from benchmarks.load_test import MemorySampler
    from tests.local_server import start_app, stop_app, upload

    indexes = folder / "indexes"
    indexes.mkdir()
    process, url = start_app(indexes, INTERPRET_RESULT_CACHE_MB="0", INTERPRET_MODELS=", ".join(labels))
    sampler = MemorySampler(process.pid)
    try:
        for label in labels:
            for name, (api_name, data) in door_requests(label, folder).items():
                runs = []
                for _ in range(max(2, repeat)):
                    before = sampler.reset()
                    started = time.perf_counter()
                    sent = [upload(url, Path(EXAMPLE)) if value == "IMAGE" else
                            upload(url, Path(value[5:])) if isinstance(value, str) and value.startswith("FILE:")
                            else value for value in data]
                    request = urllib.request.Request(f"{url}gradio_api/call/{api_name}",
                                                     json.dumps({"data": sent}).encode(),
                                                     {"Content-Type": "application/json"})
                    try:
                        with urllib.request.urlopen(request, timeout=600) as response:
                            event = json.loads(response.read())["event_id"]
                        with urllib.request.urlopen(f"{url}gradio_api/call/{api_name}/{event}",
                                                    timeout=600) as response:
                            answer = response.read().decode()
                        outcome = "answered" if "event: complete" in answer else \
                            "refused: " + answer.split("data:", 1)[-1].strip()[:70]
                    except urllib.error.HTTPError as error:
                        outcome = f"refused (HTTP {error.code}): " + error.read().decode()[-70:]
                    seconds = time.perf_counter() - started
                    time.sleep(0.2)
                    runs.append((seconds, sampler.peak() - before, sampler.rss() - before, outcome))
                peak, held = (max(values) for values in list(zip(*runs))[1:3])
                print(f"| {label} | {name} | {runs[0][0]:.2f} | {runs[-1][0]:.2f} | {peak:+.0f} | {held:+.0f} | "
                      f"{runs[-1][3]} |", flush=True)
    finally:
        sampler.stop()
        stop_app(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["toy (bundled)", "ViT-B-32 / random init"])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each request (at least 2)")
    parser.add_argument("--door", action="store_true", help="through the REST API of a running app.py")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="interpret-cost-"))
    if args.door:
        print("| model | request (through the door) | seconds | again (s) | server's peak growth (MiB) | held after "
              "(MiB) | outcome |\n|---|---|---|---|---|---|---|")
        through_the_door(args.models, args.repeat, folder)
        return
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
