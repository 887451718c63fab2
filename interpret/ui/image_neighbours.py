"""The Image neighbours per head tab: database images that one head sees like the query."""
from __future__ import annotations

import gradio as gr

from .common import QUICK, Shared, connect, friendly_errors, layer_and_head, model_for, picture_of
from .database import session_of
from .neighbours import checked_k, database_title, database_for, gallery, head_and_count, neighbour_outputs

TITLE = "Image neighbours per head"


@friendly_errors
def run_image_neighbours(label: str, image_path: str | None, layer: float, head: float, k: float = 12,
                         request: gr.Request = None):
    """Database images whose head (layer, head) contribution points where the query's does."""
    k = checked_k(k)
    model = model_for(label)
    layer, head = layer_and_head(model, layer, head)
    picture = picture_of(image_path)
    session = session_of(request)
    database = database_for(model, session)
    items, note = gallery(database.image_neighbours(picture, layer, head, k=k), database,
                          database_title(model, session, database))
    return items, f"**Head {layer}.{head}**: " + note


def build(shared: Shared) -> None:
    gr.Markdown("Images of the database that **one head** sees like yours.")
    layer, head, k = head_and_count("image-nn")
    button, status, summary, pictures = neighbour_outputs("image-nn")
    shared.link(TITLE, layer=layer, head=head, k=k)
    connect(button.click, run_image_neighbours, [shared.model, shared.image, layer, head, k], [pictures, summary],
            status, api_name="image_neighbours", pool=QUICK)
