"""Every client is a visitor of its own, whatever its door (a running `python app.py --mcp`, toy model, 127.0.0.1):
each MCP session, a REST caller with a session id of its own, one with none (the cURL call of Gradio's API page);
and every answer arrives whole when many visitors ask the same thing at once."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import tempfile
import threading
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from interpret.models import ModelSpec
from interpret.toy.examples import toy_examples
from tests.local_server import endpoint_index, join, outcomes, start_app, stop_app, upload

pytest.importorskip("mcp")
TOY = ModelSpec("toy", None).label
EXAMPLE = Path(toy_examples()[0][0])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, url = start_app(tmp_path_factory.mktemp("indexes"), INTERPRET_MCP="1", INTERPRET_ANALYSIS_SLOTS="1",
                             INTERPRET_QUICK_SLOTS="1")
    try:
        yield url
    finally:
        stop_app(process)


def planted_zip(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as writer:
        for number in range(count):
            writer.writestr(f"planted_{number:04d}.png", EXAMPLE.read_bytes())
    return buffer.getvalue()


def text_of(answer) -> str:
    return " ".join(getattr(part, "text", "") or "" for part in answer.content)


class McpVisitor:
    """One MCP client with a session of its own, on a loop of its own thread (so that tests can run several)."""

    def __init__(self, url: str):
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ready = threading.Event()
        self.session = None
        self._closed = None
        asyncio.run_coroutine_threadsafe(self._open(), self.loop)
        assert self.ready.wait(60), "the MCP session did not open"

    async def _open(self):
        from mcp import ClientSession
        from mcp.client.streamable_http import streamablehttp_client

        self._closed = asyncio.Event()
        async with streamablehttp_client(self.url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                self.session = session
                self.ready.set()
                await self._closed.wait()

    def call(self, tool: str, arguments: dict, timeout: float = 300):
        future = asyncio.run_coroutine_threadsafe(self.session.call_tool(tool, arguments), self.loop)
        return future.result(timeout)

    def submit(self, tool: str, arguments: dict):
        return asyncio.run_coroutine_threadsafe(self.session.call_tool(tool, arguments), self.loop)

    def close(self):
        self.loop.call_soon_threadsafe(self._closed.set)
        self.thread.join(0)


def rest_call(url: str, api_name: str, data: list) -> tuple[int, str]:
    """Gradio's documented cURL call: POST /gradio_api/call/<name> with no session id, then its answer's stream."""
    request = urllib.request.Request(f"{url}gradio_api/call/{api_name}", json.dumps({"data": data}).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            event = json.loads(response.read())["event_id"]
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    with urllib.request.urlopen(f"{url}gradio_api/call/{api_name}/{event}", timeout=300) as response:
        return 200, response.read().decode()


def test_the_documented_rest_call_without_a_session_id_is_answered(server):
    status, answer = rest_call(server, "model_info", [TOY])
    assert status == 200 and "event: complete" in answer and "4 layers x 8 heads" in answer, answer


def test_mcp_sessions_and_rest_callers_see_only_their_own_database(server):
    builder, bystander = McpVisitor(server), McpVisitor(server)
    try:
        archive = "data:application/zip;base64," + base64.b64encode(planted_zip(3)).decode()
        built = text_of(builder.call("build_database", {"label": TOY, "archive": archive, "folder": ""}))
        assert "Done in" in built, built
        own = text_of(builder.call("head_atlas", {"label": TOY, "layer": 0, "head": 0}))
        other = text_of(bystander.call("head_atlas", {"label": TOY, "layer": 0, "head": 0}))
        assert "over 3 images" in own and "over 3 images" not in other, (own, other)
        searched = text_of(bystander.call("text_neighbours", {"label": TOY, "text": "something red", "layer": -1,
                                                               "head": 0, "k": 24}))
        assert "planted" not in searched

        # a REST caller with its own session id builds; another, with none, and the MCP clients do not see it
        session = "rest-builder"
        stored = upload(server, _written(planted_zip(5)))
        join(server, endpoint_index(server, "build_database"), [TOY, stored, ""], session)
        assert outcomes(server, session, 1)[0]["success"]
        join(server, endpoint_index(server, "head_atlas"), [TOY, 0, 0], session)
        assert "over 5 images" in json.dumps(outcomes(server, session, 1)[0]["output"])
        status, anonymous = rest_call(server, "head_atlas", [TOY, 0, 0])
        assert status == 200 and "over 5 images" not in anonymous and "over 3 images" not in anonymous
        for visitor in (builder, bystander):
            atlas = text_of(visitor.call("head_atlas", {"label": TOY, "layer": 0, "head": 0}))
            assert "over 5 images" not in atlas
    finally:
        builder.close()
        bystander.close()


def _written(data: bytes) -> Path:
    path = Path(tempfile.mkdtemp()) / "images.zip"
    path.write_bytes(data)
    return path


def test_one_mcp_client_s_flood_leaves_another_served(server):
    flooder, bystander = McpVisitor(server), McpVisitor(server)
    try:
        image = "data:image/png;base64," + base64.b64encode(EXAMPLE.read_bytes()).decode()
        flood = [flooder.submit("heads", {"label": TOY, "image_path": image, "caption": f"a red circle {n}",
                                          "top": 5, "remove": ""}) for n in range(12)]
        answers = [text_of(bystander.call("model_info", {"label": TOY})) for _ in range(3)]
        assert all("4 layers x 8 heads" in answer for answer in answers), answers  # not "Queue is full"
        results = [future.result(300) for future in flood]
        refused = [text_of(result) for result in results if result.isError]
        assert len(refused) < len(flood)  # its own share is served; beyond it, it is told to wait for its answers
        assert all("requests waiting already" in text or "Queue is full" in text for text in refused), refused
    finally:
        flooder.close()
        bystander.close()


def test_forty_concurrent_mcp_calls_are_all_answered(server):
    visitors = [McpVisitor(server) for _ in range(5)]
    try:
        futures = [visitor.submit("model_info", {"label": TOY}) for visitor in visitors for _ in range(8)]
        texts = [text_of(future.result(120)) for future in futures]
        assert len(texts) == 40 and all("4 layers x 8 heads" in text for text in texts), texts[:3]
    finally:
        for visitor in visitors:
            visitor.close()


def test_identical_answers_to_many_visitors_arrive_whole(server):
    """8 visitors x 25 identical topic maps through real HTTP: every picture downloads whole (Gradio wrote the
    shared output file in place, and one visitor's write cut another's download)."""
    image = upload(server, EXAMPLE)
    topic = endpoint_index(server, "topic_segmentation")

    def visitor(number: int) -> list[int]:
        sizes = []
        session = f"same-question-{number}"
        for _ in range(25):
            status, answer = join(server, topic, [TOY, image, "something red", "all", 0.5, "", "all"], session)
            assert status == 200, answer
            done = outcomes(server, session, 1)[0]
            assert done["success"], done
            picture = done["output"]["data"][0]
            with urllib.request.urlopen(picture["url"], timeout=60) as response:
                declared, body = int(response.headers["Content-Length"]), response.read()
            assert len(body) == declared and body, (len(body), declared)
            sizes.append(len(body))
        return sizes

    with ThreadPoolExecutor(8) as pool:
        sizes = [size for sizes in pool.map(visitor, range(8)) for size in sizes]
    assert len(sizes) == 200 and len(set(sizes)) == 1


def test_an_sse_mcp_client_keeps_its_own_database_across_calls(server):
    """The SSE transport's clients (`/gradio_api/mcp/sse`) are visitors of their own too, by their session."""
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    async def build_then_look() -> str:
        async with sse_client(server + "gradio_api/mcp/sse") as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                archive = "data:application/zip;base64," + base64.b64encode(planted_zip(4)).decode()
                built = text_of(await session.call_tool("build_database", {"label": TOY, "archive": archive,
                                                                           "folder": ""}))
                assert "Done in" in built, built
                return text_of(await session.call_tool("head_atlas", {"label": TOY, "layer": 0, "head": 0}))

    own = asyncio.run(asyncio.wait_for(build_then_look(), timeout=300))
    bystander = McpVisitor(server)
    try:
        other = text_of(bystander.call("head_atlas", {"label": TOY, "layer": 0, "head": 0}))
    finally:
        bystander.close()
    assert "over 4 images" in own and "over 4 images" not in other, (own, other)


def test_an_mcp_prompt_that_does_not_exist_is_refused_by_name(server):
    visitor = McpVisitor(server)
    try:
        from mcp.shared.exceptions import McpError

        with pytest.raises(McpError, match="Prompt not found: 'no_such_prompt'"):
            asyncio.run_coroutine_threadsafe(visitor.session.get_prompt("no_such_prompt", {}),
                                             visitor.loop).result(60)  # Gradio ran its last endpoint instead
    finally:
        visitor.close()


@pytest.mark.parametrize("address, status, message", [
    ("?tab=Topic+segmentation&caption=" + "a" * 100_000, 414, "too long"),  # Gradio: HTTP 500, httpx.InvalidURL
    ("?caption=" + "a" * 7_000, 200, ""),
])
def test_a_link_too_long_to_read_is_refused_with_a_message(server, address, status, message):
    try:
        with urllib.request.urlopen(server + address, timeout=60) as response:
            answer = (response.status, "")
    except urllib.error.HTTPError as error:
        answer = (error.code, error.read().decode())
    assert answer[0] == status and message in answer[1], answer


def test_a_number_json_cannot_hold_is_refused_before_the_queue(server):
    body = json.dumps({"data": [0], "fn_index": 0, "session_hash": "number-digits"}).replace("0]", "9" * 5_001 + "]")
    request = urllib.request.Request(server + "gradio_api/queue/join", body.encode(),
                                     {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 400 and "parsing the body" in refused.value.read().decode()


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_an_event_number_the_page_does_not_have_is_refused_with_the_endpoints(server):
    for number in (10 ** 6, -1, "x"):
        body = json.dumps({"data": [], "fn_index": number, "session_hash": "numbers", "event_data": None,
                           "trigger_id": None}).encode()
        status, answer = post(server + "gradio_api/queue/join", body)
        assert status in (404, 422) and ("/heads" in answer or "fn_index" in answer), (number, status, answer)


def test_only_the_events_the_api_page_lists_can_be_called_by_name(server):
    status, answer = rest_call(server, "run_training", [TOY, 1])  # the Features tab's private Train button
    assert status == 404 and "No endpoint is named 'run_training'" in answer and "/heads" in answer
    with urllib.request.urlopen(server + "gradio_api/info", timeout=60) as response:
        listed = json.loads(response.read())["named_endpoints"]
    assert "/run_training" not in listed and "/heads" in listed


def test_null_where_the_page_always_sends_a_value_is_refused_by_name_over_rest(server):
    image = upload(server, EXAMPLE)
    status, answer = rest_call(server, "heads", [TOY, image, "a red circle", None, ""])
    assert status == 422 and "`top`" in answer and "not null" in answer, answer


def test_an_mcp_body_nested_too_deeply_is_refused_with_a_message(server):
    body = ("[" * 100_000 + "]" * 100_000).encode()
    status, answer = post(server + "gradio_api/mcp/", body, {"Accept": "application/json, text/event-stream"})
    assert status == 400 and "nested too deeply" in answer, (status, answer[:300])
