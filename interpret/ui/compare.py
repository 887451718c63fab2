"""The Compare explanations tab: every explanation method's map of the image and caption side by side, on one
colour scale, each with its deletion and insertion AUC on this image (`explanations.py`, `faithfulness.py`)."""
from __future__ import annotations

import gradio as gr

from ..errors import InterpretError
from ..explanations import METHODS, Subject, explain
from ..faithfulness import BASELINES, area, perturbation_curves
from ..interact import affordable_steps, block_work, interaction_work
from ..limits import COMPARE_CURVE_STEPS as CURVE_STEPS, MAX_COMPARE_WORK, MAX_INTERACTION_WORK
from ..render import maps_side_by_side
from .common import (LOOKUP, Shared, connect, escaped, friendly_errors, model_for, picture_of, status_box,
                     with_warnings)
from .maps import checked_opacity

TITLE = "Compare explanations"
INTERACTION_STEPS = 10
CHOICES = [(cls.title, name) for name, cls in METHODS.items()]
REPLACEMENTS = {"blur": "blurred copy", "mean": "mean colour"}  # what each of BASELINES puts in a patch's place


def checked_methods(methods) -> list[str]:
    chosen = [methods] if isinstance(methods, str) else list(methods or [])
    unknown = [str(name)[:40] for name in chosen if name not in METHODS]
    if unknown:
        raise InterpretError(f"Unknown method '{unknown[0]}': choose among {', '.join(METHODS)}.")
    if not chosen:
        raise InterpretError("Tick at least one method to compare.")
    return list(dict.fromkeys(chosen))  # each method once: at most `COMPARED_METHODS` maps a request


CPU_RATE = 60e9  # multiply-adds a second on 2 CPU cores (benchmarks/interaction_work.py: 40 to 103)


def compare_plan(model, caption: str, methods: list[str]) -> tuple[int, float, int]:
    """(deletion / insertion steps, multiply-adds, perturbed images) of a comparison, from the shapes alone: a map
    by gradients costs about three forward passes (interactions: `interact.interaction_work`), and each map's
    curves 2 x (steps + 1) more; the most steps, at most CURVE_STEPS, that fit `MAX_COMPARE_WORK` (0: no curves)."""
    g = model.geometry
    forward = g.layers * block_work(g.tokens, g.width)
    maps = sum(min(interaction_work(model, caption, -1, -1, INTERACTION_STEPS), MAX_INTERACTION_WORK)
               if name == "interaction" else 3 * forward for name in methods)
    for steps in range(CURVE_STEPS, 0, -2):
        images = 2 * (steps + 1) * len(methods)
        if maps + images * forward <= MAX_COMPARE_WORK:
            return steps, maps + images * forward, images
    return 0, maps, 0


@friendly_errors
def estimate_compare(label: str, caption: str, methods=tuple(METHODS)):
    """Before the work: how long the comparison will take here."""
    methods = checked_methods(methods)
    model = model_for(label)
    model.tokenize(caption or "")
    _, work, images = compare_plan(model, caption, methods)
    return (f"Mapping with {len(methods)} methods and scoring {images} perturbed images: about "
            f"**{max(work / CPU_RATE, 0.1):.1f} s** on 2 CPU cores ({work / 1e9:,.0f} billion multiply-adds)...")


@friendly_errors
def run_compare(label: str, image_path: str | None, caption: str, methods=tuple(METHODS), baseline: str = "blur",
                opacity: float = 0.6):
    """Every chosen method's map of the caption on the image, side by side, with each map's deletion and
    insertion AUC (the cosine score as its most relevant patches are replaced by a blurred copy or the mean
    colour, or put back into it)."""
    opacity = checked_opacity(opacity)
    methods = checked_methods(methods)
    if baseline not in BASELINES:
        raise InterpretError(f"Unknown baseline '{str(baseline)[:40]}': use {' or '.join(BASELINES)}.")
    model = model_for(label)
    encoded = model.tokenize(caption or "")  # an unusable caption gets its message before any image work
    warnings = encoded.warnings()
    options = {}
    if "interaction" in methods:
        steps, work = affordable_steps(model, caption, -1, -1, INTERACTION_STEPS, MAX_INTERACTION_WORK)
        if steps < 1:
            methods.remove("interaction")
            warnings.append(f"Interactions left out: they would take about {work / 1e9:,.0f} billion multiply-adds "
                            f"here (the Interactions tab or the interact command can run them).")
        elif steps < INTERACTION_STEPS:
            warnings.append(f"Interaction steps lowered from {INTERACTION_STEPS} to {steps} to fit this request.")
        options["interaction"] = {"steps": max(steps, 1)}
    if not methods:
        raise InterpretError("No method left to compare here: tick others.")
    curve_steps, _, _ = compare_plan(model, caption, methods)
    if curve_steps < CURVE_STEPS:
        warnings.append(f"Deletion and insertion with {curve_steps} steps, not {CURVE_STEPS}, to fit a request here"
                        if curve_steps else "Deletion and insertion left out: too many forward passes for a request "
                        "here (the faithfulness command computes them).")
    subject = Subject.of(model, picture_of(image_path), caption)
    panels, rows = [], []
    for name in methods:
        result = explain(model, subject, method=name, **options.get(name, {}))
        deletion = insertion = float("nan")
        if curve_steps:
            deletion, insertion = (area(curve) for curve in
                                   perturbation_curves(model, subject, result.map.grid, curve_steps, baseline))
        title = METHODS[name].title
        panels.append((title, result.map.image, f"deletion {deletion:.3f} · insertion {insertion:.3f}"
                       if curve_steps else ""))
        rows.append([title, round(deletion, 4), round(insertion, 4), round(insertion - deletion, 4)])
    figure = maps_side_by_side(subject.picture, panels, opacity)
    summary = (f"**{escaped(subject.text)}** on this image, {model.label}: cosine **{result.score:+.4f}**. Each map "
               "is scaled to 0..1 on its own (brighter: more relevant by that method).")
    if curve_steps:
        best = max(rows, key=lambda row: row[3])
        summary += (" Under each: the cosine score's area as its patches are replaced by the image's "
                    f"{REPLACEMENTS[baseline]}, most relevant first (*deletion*: lower means the map found what the score needs) and as they "
                    f"are put back (*insertion*: higher is better), {curve_steps + 1} points each. Here "
                    f"**{best[0]}** separates them most (insertion − deletion {best[3]:+.3f}).")
    summary += " Which method to trust in general: the README's table on the toy world, where the truth is known."
    return figure, rows, with_warnings(summary, warnings)


def build(shared: Shared) -> None:
    gr.Markdown("The field's explanation methods side by side: where does each one say the model finds the "
                "caption in the image? Ours (the decomposition, the interactions) and others' (attention, rollout, "
                "Chefer's gradient x attention, Grad-CAM, LeGrad, Grad-ECLIP), each with the settings of its "
                "authors' code.")
    with gr.Row():
        methods = gr.CheckboxGroup(CHOICES, value=list(METHODS), label="Methods", elem_id="compare-methods",
                                   scale=3)
        with gr.Column(scale=1):
            baseline = gr.Radio([(words, name) for name, words in REPLACEMENTS.items()], value="blur",
                                label="Deletion and insertion replace patches with", elem_id="compare-baseline")
            opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Map opacity", elem_id="compare-opacity")
    button = gr.Button("Compare the maps", variant="primary", elem_id="compare-run")
    status = status_box("compare")
    summary = gr.Markdown(elem_id="compare-summary")
    picture = gr.Image(label="Maps (PNG)", type="pil", format="png", elem_id="compare-maps", interactive=False,
                       show_label=False, buttons=["download", "fullscreen"])
    table = gr.Dataframe(headers=["method", "deletion AUC", "insertion AUC", "insertion − deletion"],
                         label="On this image", elem_id="compare-table", interactive=False)
    inputs = [shared.model, shared.image, shared.caption, methods, baseline, opacity]
    estimated = connect(button.click, estimate_compare, [shared.model, shared.caption, methods], [summary], status,
                        pool=LOOKUP)
    connect(estimated.then, run_compare, inputs, [picture, table, summary], status, api_name="compare_explanations")
