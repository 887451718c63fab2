"""What a person sees of the app's Markdown: rendered as CommonMark (raw HTML allowed, as a browser would take
it) and read back as text; and the HTML elements it makes. Tests compare what is shown, not the Markdown source,
in which the visitor's text is escaped."""
from __future__ import annotations

import html
import re
from collections import Counter

from markdown_it import MarkdownIt

_RENDERER = MarkdownIt("commonmark")
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>")


def rendered(markdown: str) -> str:
    return _RENDERER.render(markdown)


def shown(markdown: str) -> str:
    """The text a person reads (tags dropped, entities decoded, runs of white space as one space)."""
    return " ".join(html.unescape(_TAG.sub(" ", rendered(markdown))).split())


def elements(markdown: str) -> Counter:
    """The HTML elements (with their attributes) the Markdown renders to."""
    return Counter(f"{match.group(1)}{match.group(2).lower()}{match.group(3)}" for match in
                   _TAG.finditer(rendered(markdown)))
