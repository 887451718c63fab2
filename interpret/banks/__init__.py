"""Text banks: descriptions tagged with the property they are about, for TextSpan and head labels.

Banks: `general_bank()` (3,072 descriptions written for this project, twelve properties) and `toy_bank()`
(the toy world's vocabulary). Users pass their own with `load_bank(path)`: a text file, one description a line,
optionally `property<TAB>description`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InterpretError

PROPERTIES = {
    "colour": "colours and palettes",
    "shape": "geometric shapes and outlines",
    "texture": "textures and patterns",
    "location": "places and scenes",
    "animal": "animals",
    "object": "everyday objects and vehicles",
    "person": "people, emotions and activities",
    "count": "numbers and quantities",
    "text": "letters, words, digits and symbols",
    "style": "artistic styles and media",
    "light": "time of day, weather and light",
    "material": "materials",
    "size": "object size (toy world)",
    "position": "position in the image (toy world)",
}
UNTAGGED = "untagged"


@dataclass(frozen=True)
class TextBank:
    """Descriptions and the property each one is about (`UNTAGGED` when unknown)."""

    name: str
    texts: tuple[str, ...]
    tags: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def tag_counts(self) -> dict[str, int]:
        """How many descriptions carry each tag."""
        counts: dict[str, int] = {}
        for tag in self.tags:
            counts[tag] = counts.get(tag, 0) + 1
        return counts


def bank_named(name: str) -> TextBank:
    """The bundled bank of that name ('general', 'toy'), else the user's bank file at that path (`load_bank`)."""
    return {"general": general_bank, "toy": toy_bank}.get(name, lambda: load_bank(name))()


def default_bank(model_name: str) -> str:
    """The bank a model's heads are described with unless told otherwise: the toy world's for the toy models,
    the general one for every other model."""
    from ..paths import is_toy

    return "toy" if is_toy(model_name) else "general"


def general_bank() -> TextBank:
    from .general import descriptions

    texts, tags = zip(*descriptions())
    return TextBank("general", texts, tags)


def toy_bank() -> TextBank:
    from .toy import descriptions

    texts, tags = zip(*descriptions())
    return TextBank("toy", texts, tags)


def load_bank(path: str | Path) -> TextBank:
    """A user's bank: one description a line, optionally tagged as `property<TAB>description`.
    Blank lines and lines starting with '#' are skipped; duplicates are kept once."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InterpretError(f"Could not read the text bank {path}: {error}") from None
    texts, tags, seen = [], [], set()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tag, _, text = line.partition("\t") if "\t" in line else (UNTAGGED, "", line)
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
            tags.append(tag.strip() or UNTAGGED)
    if not texts:
        raise InterpretError(f"The text bank {path} holds no descriptions.")
    return TextBank(path.stem, tuple(texts), tuple(tags))
