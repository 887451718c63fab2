"""The web explorer: `python app.py` (a laptop) or a Hugging Face Space. A thin entry point: the page is
`interpret.ui` (one module per tab), the analyses are `interpret`.

    python app.py [--allow-folders] [--mcp]
    --allow-folders: the Build a database tab may read folders of this machine (your own app only)
    --mcp (or INTERPRET_MCP=1; on by default on a Hugging Face Space): also serve every analysis as an MCP tool
    at /gradio_api/mcp/ (tools listed at /gradio_api/mcp/schema)
"""
from __future__ import annotations

import argparse
import logging
import threading

from interpret.ui import build_app, serve, warm_up

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description="The CLIP interpret web explorer.")
    parser.add_argument("--allow-folders", action="store_true",
                        help="let the Build a database tab read a folder of this machine (your own app only)")
    parser.add_argument("--mcp", action="store_true", help="also serve the analyses as MCP tools (INTERPRET_MCP=1)")
    args = parser.parse_args()
    page = build_app(allow_folders=args.allow_folders)
    threading.Thread(target=warm_up, args=(page.default_label,), daemon=True).start()
    serve(page, mcp=args.mcp or None)
