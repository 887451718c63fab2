"""Start `python app.py` on 127.0.0.1 (a free port, the toy model first) for the browser, attack and load tests, and
talk to it in raw HTTP as a hostile client would."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
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
    RuntimeError with the app's output when it does not start. The app's output goes to `app.log` beside
    `indexes` (`app_log`): a pipe that nobody reads fills up, and a server that writes to it then stops answering."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               INTERPRET_DEFAULT_MODEL=ModelSpec("toy", None).label, GRADIO_ANALYTICS_ENABLED="False",
               INTERPRET_INDEXES=str(indexes), INTERPRET_HOME=str(indexes.parent / f"{indexes.name}-home"))
    env.update(environment)
    log = indexes.parent / f"{indexes.name}-app.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, text=True)
    process.log = log
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited early:\n{app_log(process)}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"app.py did not start serving within {timeout:.0f} s")


def app_log(process: subprocess.Popen, tail: int = 20_000) -> str:
    """The last `tail` characters the app started by `start_app` wrote."""
    return process.log.read_text(errors="replace")[-tail:]


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file below `folder` (relative path -> SHA-256): to check that a server left a folder alone."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


# --- raw HTTP, as a client that chooses everything (its session id included) sends it -------------------------------

def endpoint_index(url: str, api_name: str) -> int:
    """The event number (`fn_index`) of a named endpoint, from the page's config."""
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        config = json.loads(response.read())
    return next(dependency["id"] for dependency in config["dependencies"] if dependency.get("api_name") == api_name)


def upload(url: str, path: Path) -> dict:
    """Upload a file as the page does; the FileData to send in its place."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() \
        + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        stored = json.loads(response.read())[0]
    return {"path": stored, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def join(url: str, fn_index: int, data: list, session: str) -> tuple[int, str]:
    """Queue one event for `session` (any string the client likes); (HTTP status, the answer's text)."""
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                       "trigger_id": None}).encode()
    request = urllib.request.Request(url + "gradio_api/queue/join", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def outcomes(url: str, session: str, count: int, timeout: float = 300) -> list[dict]:
    """The `count` completed events of `session` ('process_completed' messages), read from its stream. A stream
    that ends early (Gradio ends a session's stream when it has no event waiting) is opened again after a pause:
    a loop without one floods the server's log with its 404s."""
    done = []
    address = url + "gradio_api/queue/data?session_hash=" + urllib.parse.quote(session, safe="")
    deadline, streams = time.monotonic() + timeout, 0
    while len(done) < count and time.monotonic() < deadline:
        if streams:
            time.sleep(0.2)
        streams += 1
        with urllib.request.urlopen(address, timeout=timeout) as response:
            for line in response:
                if not line.startswith(b"data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    done.append(message)
                if message.get("msg") == "close_stream" or len(done) == count:
                    break
    return done


def memory_mib(process: subprocess.Popen) -> tuple[float, float]:
    """(resident memory now, its high-water mark) of `process`, in MiB (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                  if ":" in line)
    return tuple(int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM"))
