"""Load test: many users at once against a local server, then hostile requests; right answers, latency, memory.

    python benchmarks/load_test.py [--users 8] [--requests 50] [--runs 3] [--cache-mb 0] [--no-hostile]

Starts `python app.py` on 127.0.0.1 (toy model; its head labels and database built first) and calls its named
endpoints with gradio_client, one client per user. First every distinct request is answered once, alone: that is
the right answer. Then one user runs the whole mix (the one-user latencies), then `--runs` times `--users` users
each send `--requests` requests drawn from the mix, all at once. An answer counts as wrong when it differs from
the one-at-a-time answer (pictures compared pixel by pixel, numbers to 6 digits). The server's resident memory
(VmRSS) is sampled every 50 ms. `--cache-mb 0` (the default) turns the server's result caches off, so that every
request computes (with caches most repeated requests would be answered from memory). Finally each request of
tests/hostile.py is sent once: it must be answered with its message in under 2 s, and the memory it costs is
measured. Loops are bounded; the server only listens on 127.0.0.1 and is stopped at the end.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradio_client import Client, handle_file  # noqa: E402
from PIL import Image  # noqa: E402

from interpret.models import ModelSpec  # noqa: E402
from interpret.toy.examples import toy_examples  # noqa: E402
from tests.hostile import TOY_CLASSES, Upload, hostile_requests  # noqa: E402
from tests.local_server import start_app, stop_app  # noqa: E402

TOY = ModelSpec("toy", None).label
# Refusals that never reach our handlers: Gradio checks sliders' ranges and dropdowns' choices itself, and the
# client cannot send NaN or infinity in JSON. They are messages too; the table says whose.
GRADIO_REFUSALS = "greater than maximum|less than minimum|not in the list of choices|not JSON compliant"


def mix() -> list[tuple[str, tuple]]:
    """The distinct requests: every endpoint on every toy example."""
    requests = []
    for number, (path, caption) in enumerate(toy_examples()):
        image = Upload(Path(path))
        requests += [
            ("heads", (TOY, image, caption, 5)),
            ("head_atlas", (TOY, 3, number % 8)),
            ("topic_segmentation", (TOY, image, "something red", "all", 0.6, "something blue\nsomething green")),
            ("contrastive_segmentation", (TOY, image, "a circle", "a square", "3", 0.6)),
            ("interaction", (TOY, image, caption, 2, 0, 6, "midpoint", "", "", 0.6)),
            ("mutual_knowledge", (TOY, image, TOY_CLASSES, None, "{}", 5)),
            ("property_neighbours", (TOY, image, "colour", 6)),
            ("image_neighbours", (TOY, image, -1, number % 8, 6)),
            ("text_neighbours", (TOY, caption, -1, number % 8, 6)),
        ]
    return requests


def for_client(value):
    return handle_file(str(value.path)) if isinstance(value, Upload) else value


def signature(value):
    """What an answer says, comparable across calls: pictures by their pixels, numbers to 6 digits."""
    if isinstance(value, str) and len(value) < 4096 and os.path.isfile(value):
        with Image.open(value) as picture:
            return "picture:" + hashlib.sha256(picture.convert("RGB").tobytes()).hexdigest()[:16]
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return tuple((key, signature(item)) for key, item in sorted(value.items()) if key not in ("url", "path",
                                                                                                  "orig_name"))
    if isinstance(value, (list, tuple)):
        return tuple(signature(item) for item in value)
    return value


class MemorySampler:
    """VmRSS of a process every `interval` seconds, in a thread; `peak()` since the last `reset()`."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self._peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> float:
        """MiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._peak = max(self._peak, self.rss())
            except OSError:
                return

    def reset(self) -> float:
        self._peak = self.rss()
        return self._peak

    def peak(self) -> float:
        return max(self._peak, self.rss())

    def stop(self) -> None:
        self._stop.set()


def call(client: Client, endpoint: str, arguments: tuple):
    """(seconds, answer signature or None, error message or None)."""
    started = time.perf_counter()
    try:
        answer = client.predict(*(for_client(value) for value in arguments), api_name=f"/{endpoint}")
        return time.perf_counter() - started, signature(answer), None
    except Exception as error:  # gradio_client raises AppError (a message) or transport errors
        return time.perf_counter() - started, None, f"{type(error).__name__}: {error}"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def latency_table(results: list[tuple[str, float]]) -> dict[str, tuple[float, float, int]]:
    """endpoint -> (p50, p95, count), and 'all'."""
    table = {}
    for endpoint in sorted({endpoint for endpoint, _ in results}) + ["all"]:
        times = [seconds for name, seconds in results if endpoint in (name, "all")]
        table[endpoint] = (statistics.median(times), percentile(times, 0.95), len(times))
    return table


def run_users(url: str, requests: list, expected: dict, users: int, per_user: int) -> dict:
    """`users` clients at once, each sending `per_user` requests of the mix (each user from its own offset)."""
    clients = [Client(url, verbose=False) for _ in range(users)]

    def user(number: int):
        rows = []
        for step in range(per_user):
            index = (number * 7 + step * 5) % len(requests)
            endpoint, arguments = requests[index]
            seconds, answer, error = call(clients[number], endpoint, arguments)
            rows.append((endpoint, seconds, error, answer is not None and answer != expected[index]))
        return rows

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users) as pool:
        rows = [row for rows in pool.map(user, range(users)) for row in rows]
    return {"seconds": time.perf_counter() - started, "rows": rows,
            "errors": [row[2] for row in rows if row[2]], "wrong": sum(row[3] for row in rows),
            "latency": latency_table([(row[0], row[1]) for row in rows])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="requests per user")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-mb", type=int, default=0, help="the server's result caches (default: off)")
    parser.add_argument("--no-hostile", action="store_true")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="interpret-load-"))
    process, url = start_app(scratch / "indexes", INTERPRET_RESULT_CACHE_MB=str(args.cache_mb))
    memory = MemorySampler(process.pid)
    try:
        requests = mix()
        client = Client(url, verbose=False)
        print(f"server {url} (pid {process.pid}), {os.cpu_count()} cores; {len(requests)} distinct requests; "
              f"result caches {args.cache_mb} MB")
        warm = [call(client, endpoint, arguments) for endpoint, arguments in requests]  # builds labels, database
        failed = [(requests[i][0], error) for i, (_, _, error) in enumerate(warm) if error]
        if failed:
            raise SystemExit(f"requests fail even alone: {failed[:3]}")
        expected = {i: answer for i, (_, answer, _) in enumerate(warm)}
        alone = [(endpoint, call(client, endpoint, arguments)) for endpoint, arguments in requests]
        changed = sum(answer != expected[i] for i, (_, (_, answer, _)) in enumerate(alone))
        one_user = latency_table([(endpoint, seconds) for endpoint, (seconds, _, _) in alone])
        print(f"one user, one request at a time: {changed} answers differ between two passes")
        start_rss = memory.rss()
        print(f"memory after warm-up: {start_rss:.0f} MiB\n")

        bound = 2 * (args.users / (os.cpu_count() or 1))
        idle = []
        for run in range(1, args.runs + 1):
            memory.reset()
            result = run_users(url, requests, expected, args.users, args.requests)
            time.sleep(2)
            idle.append(memory.rss())
            print(f"run {run}: {args.users} users x {args.requests} requests in {result['seconds']:.1f} s: "
                  f"{len(result['errors'])} errors, {result['wrong']} wrong answers; memory peak "
                  f"{memory.peak():.0f} MiB, idle after {idle[-1]:.0f} MiB")
            for error in sorted(set(result["errors"]))[:5]:
                print(f"    error: {error[:200]}")
            print(f"    {'endpoint':<26} {'alone p50':>9} {'p95':>7} {'loaded p50':>10} {'p95':>7} {'p95 ratio':>9} "
                  f"{'bound':>6}")
            for endpoint, (p50, p95, count) in result["latency"].items():
                base50, base95, _ = one_user[endpoint]
                ratio = p95 / base95
                print(f"    {endpoint:<26} {base50:>9.3f} {base95:>7.3f} {p50:>10.3f} {p95:>7.3f} {ratio:>9.1f} "
                      f"{bound:>6.1f}{'' if ratio <= bound else '  over'}")
        print(f"\nidle memory after each run: {', '.join(f'{value:.0f}' for value in idle)} MiB "
              f"(last vs first: {100 * (idle[-1] / idle[0] - 1):+.1f} %)")

        if not args.no_hostile:
            print("\nhostile requests (each alone):")
            print(f"    {'request':<36} {'seconds':>7} {'+MiB':>6}  answer")
            for hostile in hostile_requests(scratch / "hostile", TOY, Path(toy_examples()[0][0])):
                before = memory.reset()
                seconds, answer, error = call(client, hostile.api_name, hostile.arguments)
                cost = memory.peak() - before
                ours, gradios = (bool(error and re.search(pattern, error)) for pattern in (hostile.message,
                                                                                         GRADIO_REFUSALS))
                verdict = ("ok" if ours else "ok (Gradio)" if gradios else "FAIL") if seconds < 2 and cost <= 300 \
                    else "FAIL"
                print(f"    {hostile.name:<36} {seconds:>7.2f} {cost:>+6.0f}  {verdict}: "
                      f"{(error or json.dumps(answer)[:80]).splitlines()[0][:110]}")
            print(f"    server still answering: {call(client, *requests[0])[2] is None}")
    finally:
        memory.stop()
        stop_app(process)


if __name__ == "__main__":
    main()
