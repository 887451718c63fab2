"""The toy-world example images shipped in assets/examples (evaluation seeds, so never trained on)."""
from __future__ import annotations

from pathlib import Path

from ..models import ASSETS
from .world import generate, join_phrases

EXAMPLE_SEEDS = (1003, 1001, 1030, 1005, 1000, 1043)
EXAMPLES_DIR = ASSETS / "examples"


def example_path(seed: int) -> Path:
    return EXAMPLES_DIR / f"toy-{seed}.png"


def example_caption(seed: int) -> str:
    """The scene's plain caption: its objects' colour and shape, joined."""
    return join_phrases([obj.phrase() for obj in generate(seed).objects])


def toy_examples() -> list[tuple[str, str]]:
    """(image path, caption) pairs for the app's example gallery."""
    return [(str(example_path(seed)), example_caption(seed)) for seed in EXAMPLE_SEEDS if example_path(seed).is_file()]


def write_examples() -> None:
    """(Re)draw the example images (`python -c "from interpret.toy.examples import write_examples; write_examples()"`)."""
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for seed in EXAMPLE_SEEDS:
        generate(seed).image.save(example_path(seed))
