"""What a topic or contrastive map can show: which parts of the image tower put the text at each patch (free of
torch, so that the command line can list the choice at once). The maps themselves: `segment.ImageMaps`."""
from __future__ import annotations

from .errors import InterpretError

MAP_PARTS = {
    "all": "every part: the heads (at the tokens they read), the MLPs and the embedding layer (where they write), "
           "the biases",
    "heads": "the attention heads, at the tokens they read",
    "mlps": "the MLPs, at the token each writes",
    "embedding": "the embedding layer: each patch's own embedding and position",
}
PARTS_NAMES = {"all": "all parts", "heads": "heads", "mlps": "MLPs", "embedding": "the embedding layer"}
# The default of every family: on a class-token tower the same patch map as the heads alone (only the class
# token's own MLPs are read); through an attention pooler it wins the toy world's faithfulness table (README).
DEFAULT_PARTS = "all"


def checked_parts(parts: str | None) -> str:
    """A client's choice of what to map -> a key of `MAP_PARTS` (None or '': `DEFAULT_PARTS`)."""
    if parts is None or parts == "":
        return DEFAULT_PARTS
    if not isinstance(parts, str) or parts.strip().lower() not in MAP_PARTS:
        raise InterpretError(f"Unknown parts '{str(parts)[:40]}' to map: choose one of {', '.join(MAP_PARTS)}.")
    return parts.strip().lower()
