"""The toy world's bank: descriptions naming exactly one attribute, in the toy caption grammar, tagged with it.
(A description naming two attributes, say 'a large circle', would take credit for both when labelling heads.)"""
from __future__ import annotations

from ..toy.world import COLOURS, POSITION_PHRASES, SHAPES, SIZES, with_article


def descriptions() -> list[tuple[str, str]]:
    pairs = [(f"something {colour}", "colour") for colour in COLOURS]
    pairs += [(with_article(shape), "shape") for shape in SHAPES]
    pairs += [(f"something {size}", "size") for size in SIZES]
    pairs += [(f"something {phrase}", "position") for phrase in POSITION_PHRASES]
    return pairs
