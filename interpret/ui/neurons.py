"""The Neurons tab: below the heads. For the picture and caption on the left, the neurons of an MLP layer whose
second-order effects (through the later heads) move the score most: where each fires, its words, and the heads that
carry it (a click opens that head in the Head atlas). For one neuron: its words and property label, its top images
in the model's database with where it fires on each, and how the later heads share its effect."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
from PIL import Image

from ..archives import original_names
from ..folders import model_folder, thumbnail_of
from ..errors import ImageError, InterpretError
from ..limits import MAX_TOP_NEURONS, NEURON_IMAGES_SHOWN, check_number
from ..neurons import (NEURON_MANIFEST, explain_neurons, mlp_layer, neuron_activations, neurons_folder,
                       second_order_effects, stored_directions)
from ..render import head_grid, heat_thumbnail, maps_side_by_side
from ..segment import crop_box, upsample
from .common import (QUICK, Shared, connect, escaped, friendly_errors, model_for, page_index, picture_of,
                     status_box, with_warnings)
from .database import session_of, visitor_part, whose
from .neighbours import gallery_name

TITLE = "Neurons"


def _layer(model, layer: float) -> int:
    return mlp_layer(model, page_index(layer, "The layer"))


def _directions(model, layer: int, session: str | None):
    """(MLP `layer`'s neuron directions, the folder they are in, where they come from and what they were found on
    in words): the visitor's own (built with their database, in this session), else the model's
    (`stored_directions`)."""
    own = visitor_part(session, model.slug, lambda folder: neurons_folder(folder, layer) / NEURON_MANIFEST)
    directions = stored_directions(model, layer, folder=own)
    origin = (f"{whose(model, own)}: found on {directions.count:,} images, described with the "
              f"{directions.bank or 'no'} bank")
    return directions, own or model_folder(model), origin


def _words(description: list[tuple[str, float]] | None, count: int = 3) -> str:
    return "; ".join(f"{text} ({weight:+.2f})" for text, weight in (description or [])[:count])


@friendly_errors
def run_neurons(label: str, image_path: str | None, caption: str, layer: float = -3, top: float = 10,
                request: gr.Request = None):
    """The `top` neurons of MLP `layer` (negative: from the end) whose second-order effects move the image-caption
    cosine score most (either way): their activation maps on the picture, a table (part of the score, property
    label and words where the model's neurons are described, the later heads that carry each), and a summary."""
    top = check_number(top, "The number of neurons", 1, MAX_TOP_NEURONS, integer=True)
    model = model_for(label)
    layer = _layer(model, layer)
    model.tokenize(caption or "")  # an unusable caption gets its message before any image work
    picture = picture_of(image_path)
    try:
        directions, _, origin = _directions(model, layer, session_of(request))
    except InterpretError:  # not described here: the neurons are found all the same, without words
        directions, origin = None, ""
    report = explain_neurons(model, picture, caption, layer, top, directions)
    box = crop_box(model, picture.size)
    maps = [(f"neuron {neuron}", upsample(report.maps[rank], picture.size, box),
             f"{float(report.contributions[rank]):+.4f}") for rank, neuron in enumerate(report.neurons)]
    figure = maps_side_by_side(picture, maps, columns=5)
    rows, carriers = [], []
    for rank, neuron in enumerate(report.neurons):
        heads = report.carriers(rank, 3)
        rows.append([rank + 1, neuron, round(float(report.contributions[rank]), 5),
                     report.labels[rank][0] if report.labels else "", _words(report.descriptions[rank]
                                                                            if report.descriptions else None),
                     "yes" if report.significant and report.significant[rank] else
                     ("no" if report.significant is not None else ""),
                     ", ".join(f"{l}.{h}" for l, h, _ in heads)])
        carriers += [[neuron, l, h, round(share, 5)] for l, h, share in heads]
    described = (f"Words and labels come from the neuron directions ({escaped(origin)}; their top images and a sparse "
                 "decomposition over a text bank)." if report.descriptions else
                 "This model's neurons are not described here yet (the Build a database tab finds them in a zip of "
                 "your images; or python -m interpret neurons directions), so they have no words.")
    summary = (f"Cosine score **{report.cosine:+.4f}**; the {len(report.neurons) if report.neurons else 0} neurons of "
               f"layer {report.layer} below move it most through the heads of layers {report.later[0]}-"
               f"{report.later[-1]} (all its neurons together: {report.total:+.4f}). Each map is one neuron's "
               f"activation at each patch (0..1 each); the number under it is its part of the score. {described} "
               "Click a row of the heads table to open that head in the Head atlas.")
    return figure, rows, carriers, with_warnings(summary, report.warnings)


def _database_picture(model, directions, folder: Path, name: str) -> Image.Image | None:
    """A database image by its name in `directions`, as the model reads it (`ClipModel.read_image`: a large photo
    decoded reduced): the file where the directions were computed, else its thumbnail in the model folder `folder`
    they were read from (a bundle), else None."""
    for path in (Path(directions.root) / name, thumbnail_of(folder, name)):
        try:
            if path.is_file():
                return model.read_image(path)
        except ImageError:
            continue
    return None


@friendly_errors
def run_neuron(label: str, layer: float = -3, neuron: float = 0, request: gr.Request = None):
    """One neuron of MLP `layer`: its words and property label, its top images in the model's database with its
    activation on each, and each later head's share of its effect on them."""
    model = model_for(label)
    layer = _layer(model, layer)
    count = model.tower.mlp_writes(layer).shape[0]
    neuron = check_number(neuron, "The neuron", 0, count - 1, integer=True)  # before the directions are read
    directions, folder, origin = _directions(model, layer, session_of(request))
    names = [directions.names[row] for row in directions.top_rows[neuron][:NEURON_IMAGES_SHOWN].tolist()]
    norms = directions.top_norms[neuron][:NEURON_IMAGES_SHOWN].tolist()
    found = [(name, norm, picture) for name, norm in zip(names, norms)
             if (picture := _database_picture(model, directions, folder, name)) is not None]
    gallery, shares, shown = [], None, original_names(directions.root)
    if found:
        pictures = [picture for _, _, picture in found]
        batch = model.preprocess_images(pictures)
        grids = neuron_activations(model, batch, [layer])[layer][:, model.geometry.prefix:, neuron]
        for (name, norm, picture), grid in zip(found, grids):
            values = upsample(grid.reshape(*model.geometry.grid), picture.size, crop_box(model, picture.size))
            gallery.append((heat_thumbnail(picture, values), f"{norm:.3f} · {gallery_name(shown, name)}"))
        effects = second_order_effects(model, batch, layer)
        direction = directions.directions[neuron].to(effects.embedding)
        along = effects.head_effects([neuron])[:, 0] @ direction  # [n, L', H]
        shares = (along.mean(dim=0) / along.sum(dim=(1, 2)).mean().clamp(min=1e-12)).cpu().numpy()
    property_, confidence = directions.labels[neuron] if directions.labels else ("untagged", 0.0)
    words = [[text, weight] for text, weight in (directions.descriptions[neuron] if directions.descriptions else [])]
    summary = (f"**Neuron {neuron} of layer {layer}** ({escaped(origin)}): property **{escaped(property_)}** "
               f"({confidence:.0%} of its positive words' weight; bank: {escaped(directions.bank or 'none')}). Its "
               "direction (the words' signs with it) is signed so that most of its top images' effects point along it, "
               "as the paper signs it: over another database it may point the other way. It explains "
               f"{float(directions.variance[neuron]):.0%} of its effects on its top {directions.top_rows.shape[1]} "
               f"of {directions.count} images; an image is significant for it when its effect exceeds "
               f"{float(directions.thresholds[neuron]):.4f}. The gallery shows its top {len(gallery)} images "
               "(effect norm · file) with where it fires; the grid, each later head's share of its effect along its "
               "direction on them (they add up to 1).")
    grid = head_grid(shares, f"{model.label}: layer {layer}'s neuron {neuron}, its effect through the later heads",
                     layers=list(range(layer + 1, model.geometry.layers)),
                     label="share of its effect") if shares is not None else None
    return summary, words, gallery, grid


def open_head(rows, event: gr.SelectData):
    """The head of the clicked row of the carriers table: (layer, head) for the Head atlas."""
    try:
        row = getattr(event, "row_value", None)
        if row is None:  # the table's values as the page sent them (a DataFrame), else as a list of rows
            row = list(rows.iloc[event.index[0]]) if hasattr(rows, "iloc") else rows[event.index[0]]
        return int(row[1]), int(row[2])
    except (IndexError, KeyError, TypeError, ValueError):
        return gr.skip(), gr.skip()


def build(shared: Shared) -> None:
    gr.Markdown("Below the heads: an MLP neuron's *second-order effect* is what it writes that the later heads carry "
                "to the embedding (Gandelsman, Efros & Steinhardt, ICLR 2025). Uses the picture and caption on the "
                "left.")
    with gr.Row():
        layer = gr.Number(value=-3, precision=0, label="MLP layer (negative: from the end)", elem_id="neurons-layer")
        top = gr.Slider(1, MAX_TOP_NEURONS, value=10, step=1, label="Neurons to list")
    button = gr.Button("Find the neurons", variant="primary", elem_id="neurons-run")
    status = status_box("neurons")
    summary = gr.Markdown(elem_id="neurons-summary")
    figure = gr.Image(label="Where each neuron fires", type="pil", format="png", elem_id="neurons-maps",
                      interactive=False, show_label=False)
    table = gr.Dataframe(headers=["rank", "neuron", "part of the score", "property", "words", "significant",
                                  "carried by"], label="The neurons", elem_id="neurons-table", interactive=False,
                         wrap=True, column_widths=["6%", "8%", "12%", "10%", "34%", "15%", "15%"])
    carriers = gr.Dataframe(headers=["neuron", "layer", "head", "part of the score"],
                            label="The later heads that carry them (click a row: that head in the Head atlas)",
                            elem_id="neurons-heads", interactive=False)
    shared.link(TITLE, layer=layer, top=top)
    connect(button.click, run_neurons, [shared.model, shared.image, shared.caption, layer, top],
            [figure, table, carriers, summary], status, api_name="neurons", pool=QUICK)
    shared.head_links.append((carriers, open_head))

    gr.Markdown("### One neuron")
    with gr.Row():
        neuron = gr.Number(value=0, precision=0, label="Neuron", elem_id="neuron-number")
        show = gr.Button("Show the neuron", elem_id="neuron-run")
    neuron_status = status_box("neuron")
    neuron_summary = gr.Markdown(elem_id="neuron-summary")
    words = gr.Dataframe(headers=["text", "weight"], label="Its words (sparse decomposition of its direction)",
                         elem_id="neuron-words", interactive=False)
    gallery = gr.Gallery(label="Its top images, where it fires", columns=4, height="auto", object_fit="contain",
                         elem_id="neuron-gallery", elem_classes=["captioned"])  # captions under the pictures
    split = gr.Image(label="Its effect through the later heads", type="pil", format="png", elem_id="neuron-heads",
                     interactive=False, show_label=False)
    shared.link(TITLE, neuron=neuron)
    connect(show.click, run_neuron, [shared.model, layer, neuron], [neuron_summary, words, gallery, split],
            neuron_status, api_name="neuron", pool=QUICK)
