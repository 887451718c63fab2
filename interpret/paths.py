"""Where the project's files are: bundled assets (the toy model, example images) and built data (`indexes/`)."""
from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TOY_DIR = ASSETS / "toy"
INDEXES = Path(os.environ.get("INTERPRET_INDEXES", ASSETS.parent / "indexes"))
