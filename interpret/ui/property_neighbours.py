"""The Property neighbours tab: database images like the query in one property only (colour, shape, ...)."""
from __future__ import annotations

import gradio as gr

from ..banks import PROPERTIES
from .atlas import atlas_for
from .common import LOOKUP, QUICK, Shared, connect, escaped, friendly_errors, model_for, picture_of
from .database import session_of
from .neighbours import checked_k, database_title, count_slider, database_for, gallery, neighbour_outputs

TITLE = "Property neighbours"


@friendly_errors
def run_property_neighbours(label: str, image_path: str | None, prop: str, k: float = 12,
                            request: gr.Request = None):
    """Database images like the query in one property only: the summed contributions of the heads labelled
    with it, compared by cosine."""
    k = checked_k(k)
    model = model_for(label)
    picture = picture_of(image_path)
    session = session_of(request)
    database = database_for(model, session)
    atlas = atlas_for(model, session)
    heads = database.property_heads(prop, atlas)
    results = database.property_neighbours(picture, prop, k=k, atlas=atlas)
    items, note = gallery(results, database, database_title(model, session, database))
    names = ", ".join(f"{layer}.{head}" for layer, head in heads)
    return items, f"**{escaped(prop)}**: the {len(heads)} heads labelled so ({names}). " + note


def property_choices(label: str, request: gr.Request = None):
    """The properties the model has heads for in its database, most heads first (no change when the model has
    no labels or database yet: the search says why)."""
    try:
        model = model_for(label)
        session = session_of(request)
        properties = database_for(model, session).properties(atlas_for(model, session))
    except Exception:  # noqa: BLE001  (the tab's own run reports the reason in its panel)
        return gr.update()
    return gr.update(choices=properties, value=properties[0] if properties else None)


def build(shared: Shared) -> None:
    gr.Markdown("Images of the database that look like yours **in one property only**: the summed contributions "
                "of the heads labelled with it, compared by cosine. The list holds the properties this model has "
                "heads for.")
    with gr.Row():
        choice = gr.Dropdown(list(PROPERTIES), value="colour", label="Property", elem_id="property-choice")
        k = count_slider()
    button, status, summary, pictures = neighbour_outputs("property")
    shared.link(TITLE, property=choice, k=k)
    connect(button.click, run_property_neighbours, [shared.model, shared.image, choice, k], [pictures, summary],
            status, api_name="property_neighbours", pool=QUICK)
    for trigger in (shared.model.change, shared.page.load):
        trigger(property_choices, shared.model, choice, api_visibility="private", **LOOKUP)
    shared.after_build.append((property_choices, shared.model, choice))  # a visitor's own database and labels
