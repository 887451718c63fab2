"""The Interactions tab: which caption tokens match which image patches (second-order interactions): tick tokens
to see where they match, click two corners on the picture to see which tokens match that box."""
from __future__ import annotations

import dataclasses

import gradio as gr
from PIL import Image

from ..errors import InterpretError
from ..interact import Interaction, affordable_steps, interaction_map, parse_box, parse_tokens
from ..limits import MAX_INTERACTION_WORK, MAX_STEPS, check_number
from ..models import ClipModel
from ..drawing import signed_number
from ..render import map_overlay, outline_box, token_strip
from .common import (QUICK, RecentResults, Shared, connect, escaped, file_key, friendly_errors, model_for, page_index,
                     picture_of, status_box, with_warnings)
from .maps import checked_opacity

TITLE = "Interactions"
PICKER_SIDE = 384  # small pictures are shown enlarged (whole multiples) so that corners can be clicked

_interactions = RecentResults()


def interaction_for(model: ClipModel, image_path: str | None, caption: str, image_layer: float, text_layer: float,
                    steps: float, rule: str) -> Interaction:
    """The caption x image interactions, kept for the last few inputs: choosing another span or box is instant."""
    model.tokenize(caption or "")  # an unusable caption gets its message before any image work
    image_layer, text_layer = page_index(image_layer, "The image layer"), page_index(text_layer, "The text layer")
    steps = check_number(steps, "Steps", 1, MAX_STEPS, integer=True)
    affordable, work = affordable_steps(model, caption, image_layer, text_layer, steps, MAX_INTERACTION_WORK)
    if affordable < 1:
        raise InterpretError(f"Interactions from image layer {image_layer} and text layer {text_layer} of "
                             f"{model.label} would take about {work / steps / 1e9:,.0f} billion multiply-adds even "
                             f"with 1 step; a request may take {MAX_INTERACTION_WORK / 1e9:,.0f} billion here. "
                             "Choose later layers (-1, the last block, is the fastest), or run it on your own "
                             "machine with the interact command.")
    settings = (caption, image_layer, text_layer, affordable, rule or "midpoint")
    key = (model.slug, *file_key(image_path), *settings)
    result = _interactions.get(key, lambda: interaction_map(model, picture_of(image_path), *settings),
                               valid=lambda result: result.total != 0 or result.explained == 0)
    if affordable < steps:
        lowered = (f"Steps lowered from {steps} to {affordable}: {steps} would take about {work / 1e9:,.0f} billion "
                   f"multiply-adds, and a request may take {MAX_INTERACTION_WORK / 1e9:,.0f} billion here (later "
                   "layers cost less; the interact command has no such limit).")
        result = dataclasses.replace(result, warnings=[*result.warnings, lowered])
    return result


@friendly_errors
def run_interaction(label: str, image_path: str | None, caption: str, image_layer: float = -1,
                    text_layer: float = -1, steps: float = 10, rule: str = "midpoint", tokens: str = "",
                    box: str = "", opacity: float = 0.6):
    """Where the chosen caption tokens (a span; default all words) match the image, and how much each token
    matches the chosen box of the image (default: all of it)."""
    opacity = checked_opacity(opacity)
    model = model_for(label)
    model.tokenize(caption or "")  # the span is checked against the caption's tokens before any image work
    span, region = parse_tokens(tokens, len(model.token_strings(caption))), parse_box(box)
    result = interaction_for(model, image_path, caption, image_layer, text_layer, steps, rule)
    spatial = result.span_to_region(span)
    per_token = result.region_to_span(region)
    picture = map_overlay(result.picture, spatial.image, opacity, f"'{spatial.text}' ({result.layers_name})",
                          label="interaction with the span", box=region, bound=spatial.bound)
    where = "the whole image" if region is None else f"the box {tuple(round(v) for v in region)}"
    strip = token_strip(result.tokens, per_token.numpy(), f"each token's interaction with {where}",
                        result.token_indices(span), label="red adds to the score, blue takes away (as on the map)")
    scores = [[token, round(float(value), 6)] for token, value in zip(result.tokens, per_token)]
    summary = (f"Cosine **{result.cosine:+.4f}**; {result.layers_name}, {result.steps} steps ({result.rule} rule): "
               f"the interactions sum to {result.total:+.5f} of the {result.explained:+.5f} they explain "
               f"(residual {result.residual:+.1e}, {abs(result.residual) / max(abs(result.explained), 1e-12):.1%})."
               f"\n\n**Span → region**: '{escaped(spatial.text)}' (red: where it matches). **Region → span**: over "
               f"{where}, {word_that_matches(result.tokens, per_token)}; the tokens below are coloured by their "
               "interaction, on the map's colours.")
    return picture, strip, with_warnings(summary, result.warnings), scores


def word_that_matches(tokens: list[str], per_token) -> str:
    """Which word (the start and end tokens left out, and said to be) adds most to the score, in words that agree
    with the strip: when no word adds anything, the one that takes least away is not said to match."""
    if len(tokens) <= 2:
        return "the caption holds no word between its start and end tokens"
    words = per_token[1:-1]
    best = int(words.argmax()) + 1
    value = signed_number(float(per_token[best]))
    ends = max(float(per_token[0]), float(per_token[-1]))
    said = (f"'{escaped(tokens[best])}' adds most to the score ({value})" if float(per_token[best]) > 0 else
            f"no word adds to the score: every word takes some away, '{escaped(tokens[best])}' least ({value})")
    if ends > float(per_token[best]):
        said += f" (of the words: the start and end tokens, left out here, reach {signed_number(ends)})"
    return said


def interaction_controls(label: str, image_path: str | None, caption: str, image_layer: float = -1,
                         text_layer: float = -1, steps: float = 10, rule: str = "midpoint", box: str = ""):
    """The token checkboxes and the box picker for the current interactions (cleared when there are none: the
    run's own panel says why)."""
    try:
        result = interaction_for(model_for(label), image_path, caption, image_layer, text_layer, steps, rule)
        return gr.update(choices=token_choices(result)), box_picker(result.picture, parse_box(box))
    except Exception:  # noqa: BLE001
        return gr.update(choices=[]), None


def token_choices(result: Interaction) -> list[str]:
    return [f"{index}: {token}" for index, token in enumerate(result.tokens)]


def tokens_from_checkboxes(chosen: list[str] | None) -> str:
    return ", ".join(item.split(":")[0] for item in (chosen or []))


def picker_scale(picture: Image.Image) -> int:
    return max(1, PICKER_SIDE // max(picture.size))


def box_picker(picture: Image.Image, box=None, corner=None) -> Image.Image:
    """The picture to click corners on (enlarged by `picker_scale`), with the box or first corner drawn."""
    scale = picker_scale(picture)
    enlarged = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return outline_box(enlarged, None if box is None else tuple(v * scale for v in box),
                       None if corner is None else tuple(v * scale for v in corner))


def first_corner(box: str | None) -> tuple[float, float] | None:
    """The corner of a box the picker has started ('x, y'), or None when the box is empty or whole."""
    values = [v for v in (box or "").split(",") if v.strip()]
    return (float(values[0]), float(values[1])) if len(values) == 2 else None


@friendly_errors
def pick_corner(image_path: str | None, box: str, event: gr.SelectData):
    """A click on the picker: the first corner of a new box, or the second corner of the started one (in the
    picture's own pixels)."""
    picture = picture_of(image_path)
    x, y = (float(v) / picker_scale(picture) for v in event.index[:2])
    corner = first_corner(box)
    if corner is not None:
        new_box = (min(corner[0], x), min(corner[1], y), max(corner[0], x), max(corner[1], y))
        return ", ".join(f"{v:.0f}" for v in new_box), box_picker(picture, new_box)
    return f"{x:.0f}, {y:.0f}", box_picker(picture, corner=(x, y))


def run_after_pick(*inputs):
    """`run_interaction` once the picker holds a whole box (after its second corner)."""
    if first_corner(inputs[8]) is not None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return run_interaction(*inputs)


def build(shared: Shared) -> None:
    gr.Markdown("Which caption tokens match which image patches (second-order interactions, Moeller et al.). Tick "
                "tokens to see **where** they match; click two corners on the picture to see **which tokens** "
                "match that box. For the toy model, try image layer 2 and text layer 0 (its last text blocks mix "
                "the words).")
    with gr.Row():
        image_layer = gr.Number(value=-1, precision=0, label="Image layer (-1: last block)",
                                elem_id="inter-image-layer")
        text_layer = gr.Number(value=-1, precision=0, label="Text layer (-1: last block)", elem_id="inter-text-layer")
        steps = gr.Slider(1, MAX_STEPS, value=10, step=1, label="Steps", elem_id="inter-steps")
        rule = gr.Radio(["midpoint", "right"], value="midpoint", elem_id="inter-rule",
                        label="Path points (midpoint: more exact; right: the paper's)")
    button = gr.Button("Compute interactions", variant="primary", elem_id="inter-run")
    status = status_box("inter")
    checkboxes = gr.CheckboxGroup([], label="Caption tokens: tick a span (none: all words)",
                                  elem_id="inter-token-boxes")
    with gr.Row():
        tokens = gr.Textbox(label="Span: token numbers (5, 5,6 or 5-7; empty: all words)", elem_id="inter-tokens")
        box = gr.Textbox(label="Box: left, top, right, bottom (empty: whole image)", elem_id="inter-box")
        opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Map opacity", elem_id="inter-opacity")
    summary = gr.Markdown(elem_id="inter-summary")
    # the token strip and the map get rows of their own (at a column's width their labels shrank to about 8 px)
    strip = gr.Image(label="Tokens coloured by their interaction with the box (PNG)", type="pil", format="png",
                     elem_id="inter-span", interactive=False, show_label=False, buttons=["download", "fullscreen"])
    picture = gr.Image(label="Where the span matches (PNG)", type="pil", format="png", elem_id="inter-map",
                       interactive=False, show_label=False, buttons=["download", "fullscreen"])
    with gr.Row():
        picker = gr.Image(label="Click two corners of a box", type="pil", format="png", interactive=False,
                          elem_id="inter-picker", scale=1, show_label=False)  # a label there covered a corner
        gr.Markdown("**Choose a box**: click two opposite corners on the picture; the tokens above are then coloured "
                    "by how much each one matches that box, and the Box field holds it (clear it for the whole "
                    "image).", elem_id="inter-picker-help")
    scores = gr.JSON(visible=False)  # each token's interaction, for API and MCP clients: [[token, value], ...]

    settings = [shared.model, shared.image, shared.caption, image_layer, text_layer, steps, rule]
    shared.link(TITLE, image_layer=image_layer, text_layer=text_layer, steps=steps, rule=rule, tokens=tokens, box=box,
                opacity=opacity)
    inputs, outputs = settings + [tokens, box, opacity], [picture, strip, summary, scores]
    connect(button.click, run_interaction, inputs, outputs, status, api_name="interaction", pool=QUICK).then(
        interaction_controls, settings + [box], [checkboxes, picker], api_visibility="private")
    ticked = checkboxes.input(tokens_from_checkboxes, checkboxes, tokens, api_visibility="private")
    connect(ticked.then, run_interaction, inputs, outputs, status, pool=QUICK)
    picked = connect(picker.select, pick_corner, [shared.image, box], [box, picker], status)
    connect(picked.then, run_after_pick, inputs, outputs, status, pool=QUICK)
    for control in (tokens, box):
        connect(control.submit, run_interaction, inputs, outputs, status, pool=QUICK)
    connect(opacity.release, run_interaction, inputs, outputs, status, pool=QUICK)
