"""The web explorer: `python app.py` (a laptop) or a Hugging Face Space. A thin entry point: the page is
`interpret.ui` (one module per tab), the analyses are `interpret`."""
from __future__ import annotations

import logging
import threading

from interpret.ui import build_app, serve, warm_up

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    page = build_app()
    threading.Thread(target=warm_up, args=(page.default_label,), daemon=True).start()
    serve(page)
