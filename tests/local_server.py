"""Start `python app.py` on 127.0.0.1 (a free port, the toy model first) for the browser test and the load test."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from interpret.models import ModelSpec

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(indexes: Path, timeout: float = 120, **environment: str) -> tuple[subprocess.Popen, str]:
    """The app in a process of its own (its head labels and databases in `indexes`) and its URL, once it
    answers. `environment` adds variables (INTERPRET_MODELS=..., INTERPRET_RESULT_CACHE_MB=0, ...). Raises
    RuntimeError with the app's output when it does not start."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               INTERPRET_DEFAULT_MODEL=ModelSpec("toy", None).label, GRADIO_ANALYTICS_ENABLED="False",
               INTERPRET_INDEXES=str(indexes), INTERPRET_HOME=str(indexes.parent / f"{indexes.name}-home"))
    env.update(environment)
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited early:\n{process.stdout.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"app.py did not start serving within {timeout:.0f} s")


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
