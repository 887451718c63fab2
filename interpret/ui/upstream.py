"""Faults of Gradio and of the libraries under it, mended here around them (one home; each names the fault):

- **Outputs cut under load** (Gradio 6.31, `processing_utils.save_pil_to_cache`, `save_bytes_to_cache`, and
  `save_base64_to_cache` for an MCP client's files): an
  output is saved under a name made from its content and written in place (`Path.write_bytes` truncates, then
  writes), so when two visitors get the same picture at once, one's write empties the file while the other's
  download reads it ("received 0 bytes, expected 36898"). `whole_outputs()` makes them write to a temporary name
  and rename it into place (a rename is atomic: a reader sees the old whole file or the new whole file), and not
  write at all when a whole file of that content is already there.
- **MCP clients share one visitor** (Gradio's `GradioMCPServer`): its Streamable HTTP transport is stateless (no
  MCP session ids) and every tool call goes through one loopback `gradio_client.Client`, that is one Gradio
  session: one MCP client's database was another's, and one's queued calls filled the other's per-visitor queue.
  `VisitorMCPServer` serves MCP sessions (each client gets its own `Mcp-Session-Id`) and gives each MCP session a
  loopback client, so a Gradio session, of its own. It also waits for a tool's answer without holding one of
  anyio's 40 worker threads (Gradio's `run_sync(job.result)` did: the 41st concurrent call of any client timed
  out).

(open_clip's tokenizer, whose cache of words only grew, is bounded where a model is loaded: `models.ClipModel`.)

`install()` applies them all; `serve` calls it before the page is launched.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

from ..limits import MAX_MCP_SESSIONS, MCP_SESSION_IDLE_S

# --- outputs written whole ---------------------------------------------------------------------------------------

def write_whole(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that no reader ever sees part of it: to a temporary name beside it, then renamed.
    A file already there with exactly these bytes (its name is their digest) is only touched (Gradio's cache
    deletes files by age)."""
    try:
        if path.stat().st_size == len(data):
            os.utime(path)
            return
    except OSError:
        pass
    descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def whole_outputs() -> None:
    """Gradio's in-place cache writes (pictures, bytes, an MCP client's base64 files) replaced by ones that write whole files."""
    from gradio import processing_utils as gradio_files

    if getattr(gradio_files.save_pil_to_cache, "writes_whole", False):
        return

    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = gradio_files.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / gradio_files.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        write_whole(path, data)
        return str(path)

    def save_bytes_to_cache(data: bytes, file_name: str, cache_dir: str) -> str:
        folder = Path(cache_dir) / gradio_files.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        if not Path(file_name).suffix:
            file_name += gradio_files.detect_audio_format(data)
        path = (folder / Path(file_name).name).resolve()
        write_whole(path, data)
        return str(path)

    def save_base64_to_cache(base64_encoding: str, cache_dir: str, file_name: str | None = None) -> str:
        folder = Path(cache_dir) / gradio_files.hash_base64(base64_encoding)
        folder.mkdir(exist_ok=True, parents=True)
        extension = gradio_files.client_utils.get_extension(base64_encoding)
        if file_name:
            file_name = gradio_files.client_utils.strip_invalid_filename_characters(file_name)
        path = (folder / (file_name or (f"file.{extension}" if extension else "file"))).resolve()
        if not path.exists():
            write_whole(path, gradio_files.client_utils.decode_base64_to_binary(base64_encoding)[0])
        return str(path)

    for function in (save_pil_to_cache, save_bytes_to_cache, save_base64_to_cache):
        function.writes_whole = True
        setattr(gradio_files, function.__name__, function)


# --- MCP: a visitor per session ------------------------------------------------------------------------------------

def visitor_mcp_server():
    """Gradio's MCP server class, with a Gradio session of its own for every MCP session (see the module's text)."""
    from gradio.mcp import GradioMCPServer
    from gradio_client import Client

    class VisitorMCPServer(GradioMCPServer):
        def __init__(self, blocks):
            super().__init__(blocks)
            self.manager.stateless = False  # MCP sessions: each client is told its own Mcp-Session-Id
            self.manager.max_sessions = MAX_MCP_SESSIONS
            self.manager.session_idle_timeout = MCP_SESSION_IDLE_S
            self._clients: OrderedDict[str, Client] = OrderedDict()
            self._clients_lock = threading.Lock()

        def mcp_session(self) -> str:
            """This call's MCP session id; a client that sent none is a visitor for this call only."""
            request = self.mcp_server.request_context.request
            session = request.headers.get("mcp-session-id") if request is not None else None
            return session or f"once-{uuid.uuid4().hex}"

        def _get_or_create_client(self) -> Client:
            session = self.mcp_session()
            with self._clients_lock:
                if session in self._clients:
                    self._clients.move_to_end(session)
                    return self._clients[session]
            template = super()._get_or_create_client()  # Gradio's own loopback client: its address and settings
            client = Client(template.src, download_files=False, verbose=False, analytics_enabled=False,
                            ssl_verify=False, _skip_components=False, headers={"x-gradio-user": "mcp"},
                            max_workers=8)
            with self._clients_lock:
                self._clients[session] = client
                while len(self._clients) > MAX_MCP_SESSIONS:
                    self._clients.popitem(last=False)[1].close()
            return client

        async def _execute_tool_without_progress(self, job) -> list:
            await asyncio.wrap_future(job.future)  # no worker thread held while the analysis runs
            return [job.result()]

    return VisitorMCPServer


def install() -> None:
    """Every mend above."""
    import gradio.mcp

    whole_outputs()
    if not getattr(gradio.mcp.GradioMCPServer, "visitor_per_session", False):
        server = visitor_mcp_server()
        server.visitor_per_session = True
        gradio.mcp.GradioMCPServer = server
