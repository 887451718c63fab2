"""The toy world's bank: single-attribute descriptions in the toy caption grammar, tagged with the attribute."""
from __future__ import annotations

from ..toy.world import COLOURS, POSITION_PHRASES, SHAPES, SIZES, with_article


def descriptions() -> list[tuple[str, str]]:
    pairs = [(f"something {colour}", "colour") for colour in COLOURS]
    pairs += [(with_article(shape), "shape") for shape in SHAPES]
    pairs += [(with_article(f"{size} {shape}"), "size") for size in SIZES for shape in SHAPES]
    pairs += [(f"something {phrase}", "position") for phrase in POSITION_PHRASES]
    pairs += [(f"{with_article(shape)} {phrase}", "position") for shape in SHAPES for phrase in POSITION_PHRASES]
    return pairs
