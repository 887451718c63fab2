"""The Mutual knowledge tab: why a zero-shot class, by the concepts CLIP's vision and text sides share."""
from __future__ import annotations

import gradio as gr

from ..errors import InterpretError
from ..limits import MAX_PARTS, MIN_PARTS, check_number
from ..mutual import CONCEPTS, load_descriptors, mutual_knowledge
from ..render import concept_venn, mutual_curves, parts_overlay
from ..toy.evaluate import toy_descriptors
from .common import Shared, check_text_work, connect, escaped, friendly_errors, model_for, picture_of, status_box

TITLE = "Mutual knowledge"
TOY_CLASSES = "toy world: 24 classes 'a {colour} {shape}'"
TOY_PHRASINGS = "toy world, four phrasings a class ('red', 'circle', ...)"
OWN_CLASSES = "my descriptor file (JSON)"


@friendly_errors
def run_mutual(label: str, image_path: str | None, preset: str = TOY_CLASSES, descriptor_file: str | None = None,
               template: str = "{}", concepts: float = CONCEPTS):
    """The zero-shot prediction, the image's visual concepts and the descriptors the vision and language sides
    share, the MI dynamics, and the deletion and insertion curves."""
    concepts = check_number(concepts, "Concepts", MIN_PARTS, MAX_PARTS, integer=True)
    model = model_for(label)
    if preset == OWN_CLASSES:
        if not descriptor_file:
            raise InterpretError('Upload a JSON file of classes and their descriptions: {"class": ["description", '
                                 '...], ...}.')
        descriptors = load_descriptors(descriptor_file, template=template or "{}")
        check_text_work(model, [*descriptors.prompts(), *descriptors.pool], "Your descriptor file's {count} prompts "
                        "and descriptors", "Send fewer classes or descriptors (or run `python -m interpret mutual` "
                        "on your own machine, which has no such limit).")
    else:
        descriptors = toy_descriptors("phrasings" if preset == TOY_PHRASINGS else "grammar")
    result = mutual_knowledge(model, picture_of(image_path), descriptors, parts=concepts)
    labels = [", ".join(found) for found in result.part_concepts]
    overlay = parts_overlay(result.picture, result.parts.numpy(), result.box, labels,
                            title="visual concepts (vision side)")
    venn = concept_venn([d for d in result.visual if d not in result.shared], result.shared,
                        [d for d in result.textual if d not in result.shared], f"predicted: '{result.predicted}'")
    curves = mutual_curves(result.mi_curve, result.deletion, result.insertion, result.order)
    shared = len(result.shared)
    summary = (
        f"Predicted **{escaped(result.predicted)}** (probability {result.probability:.3f} among {len(result.classes)} "
        f"classes). The two sides share **{shared} concept{'s' if shared != 1 else ''}**: "
        f"{escaped(', '.join(result.shared), limit=2_000) or 'none'}.\n\n"
        f"- **Mutual information {result.mutual_information:.2f} bits**: how many distinct concepts the sides share, "
        f"in bits (n concepts shared once each: log2 n). One shared concept gives 0 bits: the sides agree, but "
        f"there is nothing to tell apart. None shared: 0 too.\n"
        f"- **MI dynamics AUC {result.mi_auc:.2f} bits**: the mutual information as the concepts are removed, "
        f"most important first, averaged; higher when the shared knowledge is spread over several concepts.\n"
        f"- **Deletion AUC {result.deletion_auc:.2f}** (lower: the concepts carry the prediction) and **insertion "
        f"AUC {result.insertion_auc:.2f}** (higher: they suffice), from the probability of the prediction as the "
        f"concepts are blurred, or un-blurred on a blurred image.")
    return summary, overlay, venn, curves


def build(shared: Shared) -> None:
    gr.Markdown("Why this zero-shot class? The **visual concepts** of the image (its prominent patches, grouped), "
                "the descriptors each one matches (the **vision side**), the descriptors the **language side** "
                "associates with the predicted class, and what they share (Sammani & Deligiannis, NeurIPS 2024).")
    with gr.Row():
        preset = gr.Radio([TOY_CLASSES, TOY_PHRASINGS, OWN_CLASSES], value=TOY_CLASSES, label="Classes",
                          elem_id="mutual-preset")
        descriptor_file = gr.File(label='Descriptors: JSON {"class": ["description", ...]}', file_types=[".json"],
                                  type="filepath", elem_id="mutual-file")
    with gr.Row():
        template = gr.Textbox(value="{}", label="Class prompt ({} is the class)", elem_id="mutual-template")
        concepts = gr.Slider(MIN_PARTS, MAX_PARTS, value=CONCEPTS, step=1, label="Visual concepts", elem_id="mutual-parts")
    button = gr.Button("Explain the prediction", variant="primary", elem_id="mutual-run")
    status = status_box("mutual")
    summary = gr.Markdown(elem_id="mutual-summary")
    with gr.Row():
        parts_picture = gr.Image(label="Visual concepts", type="pil", format="png", interactive=False,
                                 elem_id="mutual-parts-map", show_label=False)
        venn = gr.Image(label="Concepts", type="pil", format="png", interactive=False, elem_id="mutual-venn",
                        show_label=False)
    curves = gr.Image(label="Curves", type="pil", format="png", interactive=False, elem_id="mutual-curve",
                      show_label=False)
    shared.link(TITLE, classes=preset, template=template, concepts=concepts)  # an uploaded file is not linked
    connect(button.click, run_mutual, [shared.model, shared.image, preset, descriptor_file, template, concepts],
            [summary, parts_picture, venn, curves], status, api_name="mutual_knowledge")
