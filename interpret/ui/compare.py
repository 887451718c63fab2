"""The Compare explanations tab: every explanation method's map of the image and caption side by side, on one
colour scale, each with its deletion and insertion AUC on this image (`explanations.py`, `faithfulness.py`)."""
from __future__ import annotations

import gradio as gr
import numpy as np
import torch

from ..errors import InterpretError
from ..explanations import METHODS, Subject, explain
from ..faithfulness import BASELINES, area, perturbation_curves
from ..interact import affordable_steps, block_work, interaction_work
from ..limits import COMPARE_CURVE_STEPS as CURVE_STEPS, MAX_COMPARE_WORK, MAX_INTERACTION_WORK
from ..models import is_toy
from ..neurons import default_neuron_layers, has_directions
from ..render import maps_side_by_side
from .common import (LOOKUP, Shared, connect, escaped, friendly_errors, model_for, picture_of, status_box,
                     with_warnings)
from .maps import checked_opacity

TITLE = "Compare explanations"
INTERACTION_STEPS = 10
CHOICES = [(cls.title, name) for name, cls in METHODS.items()]
REPLACEMENTS = {"blur": "blurred copy", "mean": "mean colour"}  # what each of BASELINES puts in a patch's place
AUTO = "auto"  # the baseline that tells methods apart on the model: the mean colour on the toys, else a blur
RANDOM_MAPS = 3  # random patch orders scored beside the methods: what a map that knows nothing gets
NOISE_SPREADS = 2  # a method beats noise when it beats the random orders' mean by this many of their spreads


def baseline_for(model, baseline: str) -> str:
    """`baseline`, or for "auto" the one that can tell methods apart on `model`: on the toys' flat colours a blur
    changes little (every method's AUC within 0.37-0.40, README), so the mean colour; on photos the blur."""
    if baseline == AUTO:
        return "mean" if is_toy(model.name) else "blur"
    if baseline not in BASELINES:
        raise InterpretError(f"Unknown baseline '{str(baseline)[:40]}': use {AUTO}, {' or '.join(BASELINES)}.")
    return baseline


def random_grids(model, count: int = RANDOM_MAPS) -> list:
    """`count` random relevance grids on the model's patch grid (fixed seeds: the same answer every time)."""
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(model.geometry.grid, generator=generator) for _ in range(count)]


def verdict(rows: list[list], noise: list[float]) -> str:
    """Which method separates deletion from insertion most, judged against random patch orders (`noise`: their
    insertion − deletion): a method is beyond noise when its gap exceeds the random orders' mean by more than
    `NOISE_SPREADS` of their spreads (standard deviations); the leaders are the methods beyond noise within one
    spread of the best (one image cannot rank them closer). No method beyond noise: said so, no winner."""
    mean, spread = float(np.mean(noise)), (float(np.std(noise, ddof=1)) if len(noise) > 1 else 0.0)
    judged = f"{len(noise)} random patch orders give {mean:+.3f} ± {spread:.3f}"
    ranked = sorted(rows, key=lambda row: row[3], reverse=True)
    best = ranked[0]
    if best[3] - mean <= NOISE_SPREADS * spread:
        return (f"Here no method separates them by more than noise: {judged}, and the best, {best[0]} "
                f"({best[3]:+.3f}), is within {NOISE_SPREADS} spreads of that.")
    leaders = [row for row in ranked if best[3] - row[3] <= spread and row[3] - mean > NOISE_SPREADS * spread]
    if len(leaders) == 1:
        return (f"Here **{best[0]}** separates them most (insertion − deletion {best[3]:+.3f}; {judged}, and the "
                f"next method is more than one spread behind).")
    names = ", ".join(f"**{row[0]}** ({row[3]:+.3f})" for row in leaders)
    return (f"Here {names} separate them most, within one spread of each other ({judged}): this image cannot rank "
            "them.")


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
    curves 2 x (steps + 1) more, as do the `RANDOM_MAPS` random orders' that tell noise; the most steps, at most
    CURVE_STEPS, that fit `MAX_COMPARE_WORK` (0: no curves)."""
    g = model.geometry
    forward = g.layers * block_work(g.tokens, g.width)
    maps = sum(min(interaction_work(model, caption, -1, -1, INTERACTION_STEPS), MAX_INTERACTION_WORK)
               if name == "interaction" else 3 * forward for name in methods)
    for steps in range(CURVE_STEPS, 0, -2):
        images = 2 * (steps + 1) * (len(methods) + RANDOM_MAPS)
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
def run_compare(label: str, image_path: str | None, caption: str, methods=tuple(METHODS), baseline: str = AUTO,
                opacity: float = 0.6):
    """Every chosen method's map of the caption on the image, side by side, with each map's deletion and
    insertion AUC (the cosine score as its most relevant patches are replaced by a blurred copy or the mean
    colour, or put back into it; "auto": the one that tells methods apart on this model), and which method
    separates them most when that is more than random patch orders' noise."""
    opacity = checked_opacity(opacity)
    methods = checked_methods(methods)
    model = model_for(label)
    baseline = baseline_for(model, baseline)
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
    if "neurons" in methods and not has_directions(model, default_neuron_layers(model)):
        methods.remove("neurons")
        warnings.append(f"Neurons left out: {model.label} has no neuron directions here (python -m interpret neurons "
                        "directions computes them).")
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
    figure = maps_side_by_side(subject.picture, panels, opacity,
                               title=f"Where '{subject.text}' is, by each method ({model.label}, cosine "
                                     f"{result.score:+.4f})")
    summary = (f"**{escaped(subject.text)}** on this image, {model.label}: cosine **{result.score:+.4f}**. Each map "
               "is scaled to 0..1 on its own (brighter: more relevant by that method).")
    if curve_steps:
        noise = [area(insertion) - area(deletion) for deletion, insertion in
                 (perturbation_curves(model, subject, grid, curve_steps, baseline) for grid in random_grids(model))]
        summary += (" Under each: the cosine score's area as its patches are replaced by the image's "
                    f"{REPLACEMENTS[baseline]}, most relevant first (*deletion*: lower means the map found what the "
                    "score needs) and as they are put back (*insertion*: higher is better), "
                    f"{curve_steps + 1} points each. " + verdict(rows, noise))
    summary += " Which method to trust in general: the README's table on the toy world, where the truth is known."
    return figure, rows, with_warnings(summary, warnings)


def build(shared: Shared) -> None:
    gr.Markdown("The field's explanation methods side by side: where does each one say the model finds the "
                "caption in the image? Ours (the decomposition, the interactions) and others' (attention, rollout, "
                "Chefer's gradient x attention, Grad-CAM, LeGrad, Grad-ECLIP, the second-order lens's neurons), each "
                "with the settings of its authors' code.")
    with gr.Row():
        methods = gr.CheckboxGroup(CHOICES, value=list(METHODS), label="Methods", elem_id="compare-methods",
                                   scale=3)
        with gr.Column(scale=1):
            baseline = gr.Radio([("the one for this model (toys: mean colour; others: blurred copy)", AUTO),
                                 *((words, name) for name, words in REPLACEMENTS.items())], value=AUTO,
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
    shared.link(TITLE, methods=methods, baseline=baseline, opacity=opacity)
    estimated = connect(button.click, estimate_compare, [shared.model, shared.caption, methods], [summary], status,
                        pool=LOOKUP)
    connect(estimated.then, run_compare, inputs, [picture, table, summary], status, api_name="compare_explanations")
