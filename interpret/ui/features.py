"""The Features tab: the features of a dictionary, the SAE of a block's output stream or the transcoder of a
block's MLP (the visitor picks which). For the picture (and caption) on the left: which features fire where, and
what removing each does to the score. For one feature: its name from the text bank, how often it fires, its top
database images with where it fires, the heads and neurons that write it, and the score with it removed or added.
A toy model's dictionaries are trained here (an estimate first, then a progress bar); the toys ship a transcoder for
every MLP."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..errors import ImageError, InterpretError
from ..archives import original_names
from ..folders import model_folder, thumbnail_of
from ..dictionaries import (KINDS, SAE_MANIFEST, TOY_TRAINING_TOKENS, described, dictionary_folder, explain_features,
                           feature_writers, image_features, intervened_scores, provenance, stored_dictionary,
                           train_dictionaries_of)
from ..jobs import HEAVY
from ..limits import FEATURE_IMAGES_SHOWN, MAX_FEATURE_STRENGTH, MAX_TOP_FEATURES, check_number
from ..models import layer_index
from ..paths import is_toy
from ..render import heat_thumbnail, maps_side_by_side
from ..segment import crop_box, upsample
from .common import (JOB_EVENT, QUICK, Shared, connect, escaped, follow_job, friendly_errors, model_for, page_index,
                     picture_of, status_box, with_warnings)
from .database import BUILD, session_of, visitor_part, whose
from .neighbours import gallery_name

TITLE = "Features"
DENSE_FREQUENCY = 0.1  # a feature that fires on more of all tokens than this is dense: its name says little
TOY_TRAINING_SECONDS_PER_MILLION = 120  # an SAE's, measured on 2 cores (benchmarks/bench_features.py), for the estimate
TOY_TRANSCODERS_SECONDS_PER_MILLION = 150  # the 4 transcoders' of a toy, measured on 2 cores (benchmarks/toy_transcoders.py)
DICTIONARY_CHOICES = [("SAE of the block's output", "sae"), ("Transcoder of the block's MLP", "transcoder")]


def _layer(model, layer: float) -> int:
    return layer_index(page_index(layer, "The layer"), model.geometry.layers, model.label)


def _kind(kind: str | None) -> str:
    if kind not in KINDS:
        raise InterpretError(f"The dictionary is one of {', '.join(KINDS)}, not {str(kind)[:40]!r}.")
    return kind


def _dictionary(model, kind: str, layer: int, session: str | None, with_atlas: bool = False):
    """(the dictionary of `kind` at block `layer`, its atlas or None, the model folder they are in, where it comes
    from and what it was trained on in words, a warning or None): the visitor's own (built with their database, in
    this session), else the model's (a toy's shipped transcoders are described over the toy database when an atlas
    is asked for)."""
    kind = _kind(kind)
    own = visitor_part(session, model.slug, lambda folder: dictionary_folder(folder, kind, layer) / SAE_MANIFEST)
    name = "SAE of block" if kind == "sae" else "transcoder of the MLP of block"
    try:
        if with_atlas and own is None and is_toy(model.name):
            dictionary, atlas = described(model, kind, layer)
        else:
            dictionary, atlas = stored_dictionary(model, kind, layer, own)
    except InterpretError:
        how = ("press Train (beside Find the features)" if is_toy(model.name) else
               "the Build a database tab trains one on a zip of your images, for your session; or python -m "
               f"interpret features train --kind {kind} --model {model.name} --layer {layer} --images DIR (or load "
               "SAELens's, ViT-Prisma's or saev's: features load --source ...)")
        raise InterpretError(f"No {name} {layer} for {model.label} here yet: {how}.") from None
    trained, warning = provenance(dictionary)
    return dictionary, atlas, own or model_folder(model), f"{whose(model, own)}; {trained}", warning


@friendly_errors
def run_features(label: str, image_path: str | None, caption: str, layer: float = 1, top: float = 10,
                 kind: str = "sae", request: gr.Request = None):
    """The `top` features of the dictionary (`kind`: "sae", of the stream after block `layer`, or "transcoder", of
    its MLP) that fire most on the picture: their maps, names and, with a caption, the score's change when each is
    removed from the forward pass."""
    top = check_number(top, "The number of features", 1, MAX_TOP_FEATURES, integer=True)
    kind = _kind(kind)
    model = model_for(label)
    layer = _layer(model, layer)
    if caption:
        model.tokenize(caption)
    dictionary, atlas, _, origin, warning = _dictionary(model, kind, layer, session_of(request), with_atlas=True)
    picture = picture_of(image_path)
    report = explain_features(model, picture, caption or None, layer, top, dictionary, atlas)
    box = crop_box(model, picture.size)
    maps = [(f"feature {feature}", upsample(report.maps[i], picture.size, box),
             report.names[i] if report.names else f"peak {float(report.peaks[i]):.2f}")
            for i, feature in enumerate(report.features)]
    figure = maps_side_by_side(picture, maps, columns=5) if maps else None
    rows = [[feature, round(float(report.peaks[i]), 4), int(report.patches[i]),
             round(float(report.changes[i]), 5) if report.changes is not None else "",
             report.names[i] if report.names else ""] for i, feature in enumerate(report.features)]
    summary = (f"The {len(rows)} features of the {dictionary.config.name} ({dictionary.config.features} features; "
               f"{escaped(origin)}) that fire most on the picture (their largest activation on a patch). "
               + (f"Cosine score of the caption **{report.cosine:+.4f}**; the last column is its change when the "
                  "feature is taken out of every token where it fires." if report.cosine is not None else
                  "Type a caption to see what removing each does to its score."))
    return figure, rows, with_warnings(summary, report.warnings + ([warning] if warning else []))


def _pictures(model, atlas, folder: Path, feature: int) -> list[tuple[str, float, object]]:
    """A feature's top database images that can be read here (the files, else their thumbnails in the model folder
    `folder`), as the model reads them (a large photo decoded reduced): (name, activation, picture)."""
    found = []
    for row, value in zip(atlas.top_rows[feature][:FEATURE_IMAGES_SHOWN].tolist(),
                          atlas.top_values[feature][:FEATURE_IMAGES_SHOWN].tolist()):
        if row < 0:
            continue
        name = atlas.names[row]
        for path in (Path(atlas.root) / name, thumbnail_of(folder, name)):
            try:
                if path.is_file():
                    found.append((name, value, model.read_image(path)))
                    break
            except ImageError:
                continue
    return found


@friendly_errors
def run_feature(label: str, layer: float = 1, feature: float = 0, kind: str = "sae", request: gr.Request = None):
    """One feature of the dictionary (`kind`) at block `layer`: its name and frequency, its top database images
    with where it fires, and the heads and neurons whose outputs write its pre-activation there."""
    kind = _kind(kind)
    model = model_for(label)
    layer = _layer(model, layer)
    sae, atlas, folder, origin, warning = _dictionary(model, kind, layer, session_of(request), with_atlas=True)
    feature = check_number(feature, "The feature", 0, sae.config.features - 1, integer=True)
    if atlas is None:
        raise InterpretError(f"This {sae.config.name} has no atlas (top images, names) yet: python -m interpret "
                             f"features describe --kind {kind} --layer {layer}.")
    found = _pictures(model, atlas, folder, feature)
    gallery, writers, shown = [], [], original_names(atlas.root)
    if found:
        pictures = [picture for _, _, picture in found]
        _, _, codes = image_features(model, sae, pictures)
        for (name, value, picture), code in zip(found, codes[:, model.geometry.prefix:, feature]):
            grid = code.reshape(*model.geometry.grid)
            gallery.append((heat_thumbnail(picture, upsample(grid, picture.size, crop_box(model, picture.size))),
                            f"{value:.3f} · {gallery_name(shown, name)}"))
        parts = feature_writers(model, sae, pictures, feature)
        writers = [[f"head {l}.{h}", round(v, 4)] for l, h, v in parts.top_heads(6)]
        writers += [[f"neuron {l}.{n}", round(v, 4)] for l, n, v in parts.top_neurons(6)]
        writers += [["embedding layer", round(parts.embedding, 4)], ["biases", round(parts.rest, 4)]]
        writers.sort(key=lambda row: -abs(row[1]))  # largest first, whatever writes it
    text, tag, score = atlas.labels[feature] if atlas.labels else ("", "", 0.0)
    frequency = float(atlas.frequency[feature])
    dense = (f" It fires on {frequency:.1%} of all tokens: a dense feature, whose name says little of what it "
             "does." if frequency > DENSE_FREQUENCY else "")
    summary = (f"**Feature {feature} of the {sae.config.name}** ({escaped(origin)}): named **{escaped(text) or '(none)'}** "
               f"({escaped(tag)}, cosine {score:+.3f} with what its top images share; bank: "
               f"{escaped(atlas.bank or 'none')}). It fires on {frequency:.2%} of the tokens of {atlas.count} images, "
               f"{float(atlas.mean_activation[feature]):.3f} on average where it fires.{dense} The gallery: its top "
               f"{len(gallery)} images (activation · file) and where it fires; the table: the parts of its "
               "pre-activation (averaged over the tokens where it fires on them) that the heads, neurons, the "
               "embedding layer and the biases write, largest first (they add up exactly).")
    silent = ([f"Feature {feature} fired on none of the {atlas.count} database images (a dead feature): pick one "
               "from the table of the picture's features above."] if frequency == 0 else [])
    return with_warnings(summary, ([warning] if warning else []) + silent), gallery, writers


@friendly_errors
def run_intervention(label: str, image_path: str | None, caption: str, layer: float = 1, feature: float = 0,
                     strength: float = 0, kind: str = "sae", request: gr.Request = None):
    """The picture's score with the caption as it is, and with the feature removed from every token where it fires
    (`strength` 0) or added at every token with activation `strength`."""
    kind = _kind(kind)
    model = model_for(label)
    layer = _layer(model, layer)
    strength = check_number(strength, "The strength", 0, MAX_FEATURE_STRENGTH)
    encoded = model.tokenize(caption or "")
    if not (caption or "").strip():
        raise InterpretError("Type a caption: removing or adding a feature changes its score.")
    sae = _dictionary(model, kind, layer, session_of(request))[0]
    feature = check_number(feature, "The feature", 0, sae.config.features - 1, integer=True)
    base, changed = intervened_scores(model, sae, [picture_of(image_path)], model.embed_tokens(encoded), [feature],
                                      None if strength == 0 else strength)
    before, after = float(base[0, 0]), float(changed[0, 0, 0])
    what = "removed from every token where it fires" if strength == 0 else f"added at every token ({strength:g})"
    return with_warnings(f"Score of '{escaped(encoded.kept[0])}': **{before:+.4f}** as it is, **{after:+.4f}** with "
                         f"feature {feature} of the {sae.config.name} {what} ({after - before:+.4f}).",
                         encoded.warnings())


def run_training(label: str, layer: float = 1, kind: str = "sae"):
    """Train the toy model's SAE on block `layer` (or its transcoders of every MLP, from one pass) here, as a job of
    the machine's line of long work: the place in line and the estimate first, then the progress; it stops when
    nobody waits for it any more, and a second request for the same work follows the training under way."""
    try:
        kind = _kind(kind)
        model = model_for(label)
        layer = _layer(model, layer)
        if not is_toy(model.name):
            raise InterpretError("Dictionaries are trained here for the toy models only; for this one: python -m "
                                 f"interpret features train --kind {kind} --model {model.name} --layer {layer} "
                                 "--images DIR.")
        layers = [layer] if kind == "sae" else list(range(model.geometry.layers))

        def work(job) -> str:  # Train pressed: a replacement asked for
            results = train_dictionaries_of(model, kind, layers, progress=False, replace=True)
            return ("Done: " + "; ".join(f"block {trained}: {report.line()}" for trained, (report, _) in
                                         results.items()) + ". Press Find the features.")

        what = f"an SAE on block {layer}" if kind == "sae" else f"the transcoders of all {len(layers)} MLPs"
        seconds = (TOY_TRAINING_SECONDS_PER_MILLION if kind == "sae" else TOY_TRANSCODERS_SECONDS_PER_MILLION)
        job = HEAVY.submit((kind, model.slug, *layers), f"Training {what} of {model.label}", work,
                           estimate_s=seconds * TOY_TRAINING_TOKENS / 1e6)
    except InterpretError as error:
        yield f"**Not trained:** {escaped(str(error))}"
        return
    yield from follow_job(job)


def build(shared: Shared) -> None:
    gr.Markdown("Sparse features of one block: an **SAE** of the stream after it (directions of the residual "
                "stream that few tokens use at once) or the **transcoder** of its MLP (what the MLP writes, as a few "
                "features at a time). Uses the picture and caption on the left.")
    with gr.Row():
        kind = gr.Radio(DICTIONARY_CHOICES, value="sae", label="Dictionary", elem_id="features-kind")
        layer = gr.Number(value=1, precision=0, label="Block", elem_id="features-layer")
        top = gr.Slider(1, MAX_TOP_FEATURES, value=10, step=1, label="Features to list")
    with gr.Row():
        button = gr.Button("Find the features", variant="primary", elem_id="features-run")
        train = gr.Button("Train it (toy models: an SAE of this block, or the transcoders of every MLP)",
                          elem_id="features-train")
    status = status_box("features")
    summary = gr.Markdown(elem_id="features-summary")
    figure = gr.Image(label="Where each feature fires", type="pil", format="png", elem_id="features-maps",
                      interactive=False, show_label=False)
    table = gr.Dataframe(headers=["feature", "peak", "patches", "score change without it", "name"],
                         label="The features", elem_id="features-table", interactive=False, wrap=True)
    shared.link(TITLE, dictionary=kind, layer=layer, top=top)
    connect(button.click, run_features, [shared.model, shared.image, shared.caption, layer, top, kind],
            [figure, table, summary], status, api_name="features", pool=QUICK)
    train.click(lambda: "", None, status, api_visibility="private").then(  # the "none yet" error: answered
        run_training, [shared.model, layer, kind], summary, api_visibility="private", **BUILD, **JOB_EVENT)

    gr.Markdown("### One feature")
    with gr.Row():
        feature = gr.Number(value=0, precision=0, label="Feature", elem_id="feature-number")
        strength = gr.Slider(0, MAX_FEATURE_STRENGTH, value=0, step=0.5,
                             label="Remove it (0) or add it with this activation", elem_id="feature-strength")
    with gr.Row():
        show = gr.Button("Show the feature", elem_id="feature-run")
        intervene = gr.Button("Score the caption with it removed / added", elem_id="feature-intervene")
    feature_status = status_box("feature")
    feature_summary = gr.Markdown(elem_id="feature-summary")
    gallery = gr.Gallery(label="Its top images, where it fires", columns=4, height="auto", object_fit="contain",
                         elem_id="feature-gallery", elem_classes=["captioned"])  # captions under the pictures
    writers = gr.Dataframe(headers=["what writes it", "part of its pre-activation"], label="Who writes it",
                           elem_id="feature-writers", interactive=False)
    shared.link(TITLE, feature=feature, strength=strength)
    connect(show.click, run_feature, [shared.model, layer, feature, kind], [feature_summary, gallery, writers],
            feature_status, api_name="feature", pool=QUICK)
    connect(intervene.click, run_intervention, [shared.model, shared.image, shared.caption, layer, feature,
                                                strength, kind], [feature_summary], feature_status,
            api_name="feature_intervention", pool=QUICK)
