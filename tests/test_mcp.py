"""The app as an MCP server (`python app.py --mcp`, INTERPRET_MCP=1): every analysis is a described tool, and
an MCP client can call one."""
from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from tests.local_server import start_app, stop_app

pytest.importorskip("mcp")
ANALYSES = {"heads", "topic_segmentation", "contrastive_segmentation", "interaction", "compare_explanations",
            "head_atlas", "model_scores", "property_neighbours", "image_neighbours", "text_neighbours",
            "mutual_knowledge", "model_info", "build_database", "neurons", "neuron", "features", "feature",
            "feature_intervention", "circuits"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, url = start_app(tmp_path_factory.mktemp("indexes"), INTERPRET_MCP="1")
    yield url
    stop_app(process)


def test_every_analysis_is_a_described_tool(server):
    schema = json.loads(urllib.request.urlopen(server + "gradio_api/mcp/schema", timeout=60).read())
    tools = {tool["name"]: tool for tool in schema}
    assert set(tools) == ANALYSES
    for name, tool in tools.items():
        assert len(tool["description"]) > 40, name
        properties = tool["inputSchema"]["properties"]
        assert all(properties[key].get("description") for key in properties), name  # every input described
    assert "1 to 100" in tools["text_neighbours"]["inputSchema"]["properties"]["k"]["description"]  # its limit


def test_an_mcp_client_calls_a_tool(server):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def call() -> tuple[list[str], str]:
        async with streamablehttp_client(server + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                answer = await session.call_tool("model_info", {"label": "toy (bundled)"})
                return [tool.name for tool in listed.tools], " ".join(getattr(part, "text", "")
                                                                      for part in answer.content)

    names, text = asyncio.run(asyncio.wait_for(call(), timeout=120))
    assert "compare_explanations" in names and "4 layers x 8 heads" in text


def test_the_server_is_no_mcp_server_unless_asked(monkeypatch):
    from interpret.ui import mcp_wanted

    monkeypatch.delenv("INTERPRET_MCP", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not mcp_wanted() and mcp_wanted(True)
    monkeypatch.setenv("SPACE_ID", "someone/explorer")
    assert mcp_wanted()  # on a Space by default
    monkeypatch.setenv("INTERPRET_MCP", "0")
    assert not mcp_wanted()
