"""Faults of Gradio and of the libraries under it, mended here around them (one home; each names the fault):

- **Outputs cut under load** (Gradio 6.31, `processing_utils.save_pil_to_cache`, `save_bytes_to_cache`, and
  `save_base64_to_cache` for an MCP client's files): an output is saved under a name made from its content and
  written in place (`Path.write_bytes` truncates, then writes), so when two visitors get the same picture at once, one's write empties the file while the other's
  download reads it ("received 0 bytes, expected 36898"). `whole_outputs()` makes them write to a temporary name
  and rename it into place (a rename is atomic: a reader sees the old whole file or the new whole file), and not
  write at all when a whole file of that content is already there.
- **MCP clients share one visitor** (Gradio's `GradioMCPServer`): its Streamable HTTP transport is stateless (no
  MCP session ids) and every tool call goes through one loopback `gradio_client.Client`, that is one Gradio
  session: one MCP client's database was another's, and one's queued calls filled the other's per-visitor queue.
  `VisitorMCPServer` serves MCP sessions (each client gets its own `Mcp-Session-Id`) and gives each MCP session a
  loopback client, so a Gradio session, of its own. It also waits for a tool's answer without holding one of
  anyio's 40 worker threads (Gradio's `run_sync(job.result)` did: the 41st concurrent call of any client timed
  out), makes one client per session however many of its calls arrive at once, and lets the loopback wait past
  httpx's 5 s default. And a prompt that does not exist is refused by name: Gradio's `prompts/get` handler left
  its search loop's variable at the last endpoint it looked at and ran that endpoint (`model_info`) instead.
- **A link too long for Gradio** (Gradio 6.31, `route_utils.get_request_origin`): an address over httpx's 65,536
  characters raised `httpx.InvalidURL` while the page was made: HTTP 500 and a traceback in the log.
  `unreadable_address` answers HTTP 414 with a message instead (`admission.http_errors` installs it).
- **A traceback for every MCP client that leaves** (mcp 1.30, `streamable_http.standalone_sse_writer`): when a
  session closes, its server-to-client stream's reader is closed under the writer, which logs the
  `anyio.ClosedResourceError` as an error. `QuietSessionEnds` drops exactly that record from the log.

- **Events the API page does not list, called by name; an unknown event number** (Gradio 6.31,
  `route_utils.get_fn`): every event has a name (a private one its handler's, `run_training`), and `/call/<name>`,
  `/run/<name>` and gradio_client reached private ones too; `/queue/join` with an `fn_index` the page does not
  have raised `KeyError` (HTTP 500, a traceback). `listed_events_only()` finds by name only the events the API
  page lists, and answers an unknown number as an unknown name (HTTP 404 with the endpoints, `admission`).

(open_clip's tokenizer, whose cache of words only grew, is bounded where a model is loaded: `models.ClipModel`.)

`install()` applies them all; `serve` calls it before the page is launched.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

from ..limits import MAX_MCP_SESSIONS, MCP_SESSION_IDLE_S

LOOPBACK_TIMEOUT_S = 120  # an MCP call's loopback request to this app: joining its queue, reading its answer


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

    class LoopbackClient(Client):
        """A loopback client with a session of its own that copies `template`'s config and API instead of fetching
        them (no request to this app while it is made)."""

        def __init__(self, template: Client, **options):
            self._template = template
            super().__init__(template.src, **options)

        def _get_config(self) -> dict:
            return self._template.config

        def _get_api_info(self):
            return self._template._info

    class VisitorMCPServer(GradioMCPServer):
        def __init__(self, blocks):
            super().__init__(blocks)
            self._refuse_unknown_prompts()
            self.manager.stateless = False  # MCP sessions: each client is told its own Mcp-Session-Id
            self.manager.max_sessions = MAX_MCP_SESSIONS
            self.manager.session_idle_timeout = MCP_SESSION_IDLE_S
            self._clients: OrderedDict[str, list] = OrderedDict()  # MCP session -> [its lock, its client or None]
            self._clients_lock = threading.Lock()
            self._template_lock = threading.Lock()

        def prompt_names(self) -> set[str]:
            """The MCP prompts this page offers (its endpoints marked as prompts)."""
            names = set()
            for endpoint_name in self.tool_to_endpoint.values():
                block_fn = self.get_block_fn_from_endpoint_name(endpoint_name)
                function = block_fn.fn if block_fn else None
                if getattr(function, "_mcp_type", None) == "prompt":
                    names.add(function._mcp_name)
            return names

        def _refuse_unknown_prompts(self) -> None:
            from mcp import types

            answer = self.mcp_server.request_handlers.get(types.GetPromptRequest)
            if answer is None:
                return

            async def known_prompt_only(request: types.GetPromptRequest):
                offered = self.prompt_names()
                if request.params.name not in offered:
                    offered = ", ".join(sorted(offered)) or "none"
                    raise ValueError(f"Prompt not found: {request.params.name[:100]!r} (this app offers: {offered}).")
                return await answer(request)

            self.mcp_server.request_handlers[types.GetPromptRequest] = known_prompt_only

        def mcp_session(self) -> str:
            """This call's MCP session: its `Mcp-Session-Id` (Streamable HTTP) or its `session_id` (the SSE transport's
            message address); a client that sent neither is a visitor for this call only."""
            request = self.mcp_server.request_context.request
            if request is None:
                return f"once-{uuid.uuid4().hex}"
            session = request.headers.get("mcp-session-id") or request.query_params.get("session_id")
            return f"mcp-{session}" if session else f"once-{uuid.uuid4().hex}"

        def _get_or_create_client(self) -> Client:
            session = self.mcp_session()
            with self._clients_lock:  # one entry, and so one client, per session however many calls come at once
                if session not in self._clients:
                    self._clients[session] = [threading.Lock(), None]
                    while len(self._clients) > MAX_MCP_SESSIONS:
                        evicted = self._clients.popitem(last=False)[1][1]
                        if evicted is not None:
                            evicted.close()
                self._clients.move_to_end(session)
                entry = self._clients[session]
            with entry[0]:
                if entry[1] is None:
                    entry[1] = self._new_client()
                return entry[1]

        def _new_client(self) -> Client:
            return LoopbackClient(self.template(), download_files=False, verbose=False, analytics_enabled=False,
                                  ssl_verify=False, _skip_components=False, headers={"x-gradio-user": "mcp"},
                                  max_workers=8, httpx_kwargs={"timeout": LOOPBACK_TIMEOUT_S})

        def template(self) -> Client:
            """Gradio's own loopback client (its address, the page's config and API), made once: every session's
            client copies its config instead of fetching it. Made by `warm_mcp` at start-up: made during a call,
            its fetches could wait for a worker thread that every waiting call held (anyio has 40)."""
            with self._template_lock:
                if self._client_instance is None and self.local_url:
                    self._client_instance = Client(self.local_url, download_files=False, verbose=False,
                                                   analytics_enabled=False, ssl_verify=False, _skip_components=False,
                                                   headers={"x-gradio-user": "mcp"})
            return super()._get_or_create_client()

        async def _execute_tool_without_progress(self, job) -> list:
            await asyncio.wrap_future(job.future)  # no worker thread held while the analysis runs
            return [job.result()]

    return VisitorMCPServer


def warm_mcp(page, timeout_s: float = 300) -> None:
    """Once `page` serves MCP and knows its address, make its loopback template (see `VisitorMCPServer.template`).
    Run in a thread of its own beside `launch`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server = getattr(page, "mcp_server_obj", None)
        if server is not None and server.local_url and hasattr(server, "template"):
            try:
                server.template()
            except Exception:  # noqa: BLE001 (the first call makes it instead)
                logging.getLogger("interpret.app").warning("MCP loopback client not made at start", exc_info=True)
            return
        time.sleep(0.5)


def unreadable_address(request, error):
    """HTTP 414 (too long) or 400 for an address Gradio cannot parse (see the module's text), with what to do."""
    from fastapi.responses import PlainTextResponse

    if "too long" in str(error).lower():
        return PlainTextResponse("This address is too long (a link holds at most 65,536 characters). Open the page "
                                 "without it, or make the link again from a shorter view.", status_code=414)
    return PlainTextResponse("This address cannot be read (it holds characters an address may not). Open the page "
                             "without it.", status_code=400)


class QuietSessionEnds(logging.Filter):
    """Drops the MCP library's "Error in standalone SSE writer" record when its error is only the stream's end (a
    client closed its session); any other error of that writer is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        import anyio

        error = record.exc_info[1] if record.exc_info else None
        ended = isinstance(error, (anyio.ClosedResourceError, anyio.BrokenResourceError))
        return not (ended and record.getMessage() == "Error in standalone SSE writer")


def listed_events_only() -> None:
    """`route_utils.get_fn` (how every route finds the event a request names) as said above."""
    from gradio import route_utils

    if getattr(route_utils.get_fn, "listed_only", False):
        return
    get_fn = route_utils.get_fn

    def listed_get_fn(blocks, api_name, body):
        if body.fn_index is None and api_name is not None:
            for fn in blocks.fns.values():
                if fn.api_name == api_name and getattr(fn, "api_visibility", "public") != "public":
                    raise route_utils.FnIndexInferError(f"No listed endpoint is named {api_name}")
        try:
            return get_fn(blocks, api_name, body)
        except (KeyError, TypeError):  # an fn_index the page does not have (or one that is not a number)
            raise route_utils.FnIndexInferError(f"No event number {str(body.fn_index)[:40]}") from None

    listed_get_fn.listed_only = True
    route_utils.get_fn = listed_get_fn


def install() -> None:
    """Every mend above."""
    import gradio.mcp

    whole_outputs()
    listed_events_only()
    stream_log = logging.getLogger("mcp.server.streamable_http")
    if not any(isinstance(existing, QuietSessionEnds) for existing in stream_log.filters):
        stream_log.addFilter(QuietSessionEnds())
    if not getattr(gradio.mcp.GradioMCPServer, "visitor_per_session", False):
        server = visitor_mcp_server()
        server.visitor_per_session = True
        gradio.mcp.GradioMCPServer = server
