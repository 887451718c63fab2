"""The Text neighbours per head tab: database images whose contribution from one head matches a text."""
from __future__ import annotations

import gradio as gr

from ..errors import InterpretError
from .common import LOOKUP, Shared, connect, escaped, friendly_errors, layer_and_head, model_for
from .database import session_of
from .neighbours import checked_k, database_title, database_for, gallery, head_and_count, neighbour_outputs

TITLE = "Text neighbours per head"


@friendly_errors
def run_text_neighbours(label: str, text: str, layer: float, head: float, k: float = 12,
                        request: gr.Request = None):
    """Database images whose head (layer, head) contribution points along the text's embedding."""
    k = checked_k(k)
    model = model_for(label)
    layer, head = layer_and_head(model, layer, head)
    if not (text or "").strip():
        raise InterpretError("Type a text to search the database for (for example: something red).")
    model.tokenize(text)  # an over-long text gets its message before any database work
    session = session_of(request)
    database = database_for(model, session)
    items, note = gallery(database.text_neighbours(text, layer, head, k=k), database,
                          database_title(model, session, database))
    return items, f"**Head {layer}.{head}**, '{escaped(text.strip())}': " + note


def build(shared: Shared) -> None:
    gr.Markdown("Images of the database whose contribution from **one head** matches a text.")
    text = gr.Textbox(label="Text", placeholder="something red", elem_id="text-nn-text")
    layer, head, k = head_and_count("text-nn")
    button, status, summary, pictures = neighbour_outputs("text-nn")
    shared.link(TITLE, text=text, layer=layer, head=head, k=k)
    connect(button.click, run_text_neighbours, [shared.model, text, layer, head, k], [pictures, summary], status,
            api_name="text_neighbours", pool=LOOKUP)
