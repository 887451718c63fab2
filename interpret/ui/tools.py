"""What each named endpoint answers, its inputs with their limits, and what it returns: the API page's and the MCP
tools' descriptions (`python app.py --mcp`; Gradio reads a handler's docstring: a description, then `Args:` and
`Returns:` lines). One home for them; `common.connect` applies them to each named endpoint's handler, whose tool
then bears the endpoint's name."""
from __future__ import annotations

import functools
import inspect
from typing import Callable

from ..explanations import METHODS
from ..parts import DEFAULT_PARTS, MAP_PARTS
from ..limits import (MAX_CIRCUIT_FEATURES, MAX_INTERACTION_WORK, MAX_NEIGHBOURS, MAX_PARTS, MAX_SPEC_CHARS, MAX_STEPS,
                      MAX_TEXT_CHARS, MAX_TEXTS, MAX_TOP_FEATURES, MAX_TOP_HEADS, MAX_TOP_NEURONS, MIN_PARTS,
                      NEURON_IMAGES_SHOWN, FEATURE_IMAGES_SHOWN, MAX_FEATURE_STRENGTH)

MODEL = "the model's label, one of the app's list (e.g. 'toy (bundled)', 'ViT-B-32 / openai'); /model_info describes it"
IMAGE = "the image (a file: PNG, JPEG, WebP...; at most 50 MB and 40 megapixels)"
TEXT = f"a text of at most {MAX_TEXT_CHARS:,} characters (the model reads its first tokens only)"
HEADS = f"which heads: 'all', a layer ('3'), a head ('3.2') or heads ('3.2, 2.5'); at most {MAX_SPEC_CHARS} characters"
OPACITY = "the map's opacity over the picture, 0 to 1"
PARTS = "what to map: " + "; ".join(f"'{key}': {text}" for key, text in MAP_PARTS.items()) + \
    f" (default '{DEFAULT_PARTS}')"
LAYER = "a layer of the image tower, from 0 (negative counts from the end: -1 is the last)"
DICTIONARY = "'sae' (the SAE of the stream after the block) or 'transcoder' (the transcoder of its MLP)"
HEAD = "a head of that layer, from 0"
K = f"how many neighbours, 1 to {MAX_NEIGHBOURS}"
MLP_LAYER = "an MLP layer of the image tower that has later heads: 0 to layers - 2 (negative counts from the end: -2 " \
    "is the last with later heads; -3 the default)"

TOOLS: dict[str, tuple[str, dict[str, str], str]] = {
    "model_info": ("A CLIP model's shapes: layers, heads, width, joint space, input size, patch grid, text tokens.",
                   {"label": MODEL}, "a one-line description"),
    "heads": ("Why a CLIP model matches an image and a caption: the cosine score split over every layer and "
              "attention head (exact: the parts add up to the score), the heads that move it most, and the score "
              "without chosen heads.",
              {"label": MODEL, "image_path": IMAGE, "caption": TEXT, "top": f"heads to list, 1 to {MAX_TOP_HEADS}",
               "remove": "heads to remove, e.g. '3.4, 2.*' (optional)"},
              "the layer x head grid (PNG), the table of top heads, a Markdown summary"),
    "topic_segmentation": ("Where in the image the chosen parts of the tower find a text: each patch's contribution "
                           "to the image-text cosine score, optionally minus the mean map of other texts.",
                           {"label": MODEL, "image_path": IMAGE, "text": TEXT, "heads": HEADS, "opacity": OPACITY,
                            "relative_to": f"other texts, one a line (at most {MAX_TEXTS}; empty: the raw map)",
                            "parts": PARTS},
                           "the map beside the picture (PNG), a Markdown summary"),
    "contrastive_segmentation": ("Where in the image the chosen parts of the tower find text A rather than text B.",
                                 {"label": MODEL, "image_path": IMAGE, "text_a": TEXT, "text_b": TEXT,
                                  "heads": HEADS, "opacity": OPACITY, "parts": PARTS},
                                 "the map beside the picture (PNG), a Markdown summary"),
    "interaction": ("Which caption tokens match which image patches: second-order interactions (complete: they "
                    "add up to what they explain), for a span of tokens and a box of the image.",
                    {"label": MODEL, "image_path": IMAGE, "caption": TEXT, "image_layer": LAYER,
                     "text_layer": "a layer of the text tower (-1: the last)",
                     "steps": f"path points, 1 to {MAX_STEPS} (lowered to fit "
                              f"{MAX_INTERACTION_WORK / 1e9:,.0f} billion multiply-adds)",
                     "rule": "'midpoint' or 'right'", "tokens": "a span: '2', '2,3', '2-4' ('': all words)",
                     "box": "'left, top, right, bottom' in the picture's pixels ('': all of it)",
                     "opacity": OPACITY},
                    "the span's map (PNG), each token with its score over the box, a Markdown summary"),
    "compare_explanations": ("Every explanation method's map of a caption on an image side by side (ours: the "
                             "decomposition, the interactions; the field's: attention, rollout, Chefer, Grad-CAM, "
                             "LeGrad, Grad-ECLIP, the second-order lens's neurons), each with its deletion and "
                             "insertion AUC on this image.",
                             {"label": MODEL, "image_path": IMAGE, "caption": TEXT,
                              "methods": f"a list of methods among {', '.join(METHODS)}",
                              "baseline": "'blur' or 'mean': what replaces the patches for deletion and insertion",
                              "opacity": OPACITY},
                             "the maps (PNG), a table of each map's deletion and insertion AUC, a Markdown summary"),
    "neurons": ("Below the heads: the MLP neurons of one layer whose second-order effects (what they write that "
                "the later attention heads carry to the embedding, exact) move an image-caption cosine score most, "
                "either way: where each fires, its words and property label (where the model's neurons are "
                "described), and the later heads that carry it.",
                {"label": MODEL, "image_path": IMAGE, "caption": TEXT, "layer": MLP_LAYER,
                 "top": f"neurons to list, 1 to {MAX_TOP_NEURONS}"},
                "the neurons' activation maps (PNG), the table of neurons, the table of the heads that carry them, "
                "a Markdown summary"),
    "neuron": ("One MLP neuron: its words and property label (a sparse decomposition of its second-order direction "
               "over a text bank), its top images in the model's database with where it fires on each, and each "
               "later head's share of its effect.",
               {"label": MODEL, "layer": MLP_LAYER, "neuron": "the neuron, from 0 (the MLP's hidden units)"},
               f"a Markdown summary, its words (table), a gallery of its top {NEURON_IMAGES_SHOWN} images, the "
               "later heads' shares (PNG)"),
    "features": ("The features of one block's dictionary (the SAE of the stream after it, or the transcoder of its "
                 "MLP) that fire most on an image (their maps, names from a text bank) and, with a caption, the "
                 "score's change when each is taken out of the forward pass.",
                 {"label": MODEL, "image_path": IMAGE, "caption": TEXT + " (optional)", "layer": LAYER,
                  "top": f"features to list, 1 to {MAX_TOP_FEATURES}", "kind": DICTIONARY},
                 "the features' maps (PNG), the table of features, a Markdown summary"),
    "feature": ("One feature of a dictionary (SAE or transcoder): its name and property tag, how often it fires, its "
                "top images in the model's database with where it fires, and the heads and MLP neurons whose outputs "
                "write its pre-activation (exact parts).", {"label": MODEL, "layer": LAYER, "feature":
                                                            "the feature, from 0", "kind": DICTIONARY},
                f"a Markdown summary, a gallery of its top {FEATURE_IMAGES_SHOWN} images, the table of its writers"),
    "feature_intervention": ("An image-caption score with one dictionary feature (SAE or transcoder) removed from "
                             "every token where it fires, or added at every token, and the rest of the tower run "
                             "again.", {"label": MODEL, "image_path": IMAGE, "caption": TEXT, "layer": LAYER,
                                        "feature": "the feature, from 0", "strength":
                                        f"0: remove it; up to {MAX_FEATURE_STRENGTH:g}: add it with this activation",
                                        "kind": DICTIONARY},
                             "a Markdown summary with both scores"),
    "circuits": ("An image-caption score traced through the image tower as an attribution graph (circuit-tracer's "
                 "method): each MLP replaced by its transcoder's features and an error node per token, attention "
                 "and norms fixed at the image; the replacement and completeness scores, the most influential "
                 "groups of nodes, and the graph in circuit-tracer's JSON schema.",
                 {"label": MODEL, "image_path": IMAGE, "caption": TEXT, "contrast": "a text the score is taken "
                  "relative to ('' = none)", "features": f"features kept, 1 to {MAX_CIRCUIT_FEATURES}",
                  "node_threshold": "the share of influence the nodes kept carry, 0 to 1 (0.8)",
                  "edge_threshold": "the share the edges kept carry, 0 to 1 (0.98)"},
                 "the graph (PNG), the table of groups, a Markdown summary, the graph as a JSON file"),
    "head_atlas": ("What one attention head means: its TextSpan descriptions and property label, and the map of "
                   "every head's property.", {"label": MODEL, "layer": LAYER, "head": HEAD},
                   "a Markdown summary, the descriptions table, the property map (PNG)"),
    "model_scores": ("How interpretable a model is: each head's consistency with its label, association and "
                     "entanglement, and (toy models) zero-shot accuracy as heads are removed.", {"label": MODEL},
                     "a Markdown summary, the table of scored models, the consistency grid (PNG), pruning curves"),
    "property_neighbours": ("Database images like the query in one property only (colour, shape, texture...): "
                            "the summed contributions of the heads labelled with it.",
                            {"label": MODEL, "image_path": IMAGE, "prop": "a property the model has heads for",
                             "k": K}, "a gallery of (image, caption) pairs, a Markdown summary"),
    "image_neighbours": ("Database images whose one head's contribution points where the query image's does.",
                         {"label": MODEL, "image_path": IMAGE, "layer": LAYER, "head": HEAD, "k": K},
                         "a gallery of (image, caption) pairs, a Markdown summary"),
    "text_neighbours": ("Database images whose one head's contribution points along a text's embedding.",
                        {"label": MODEL, "text": TEXT, "layer": LAYER, "head": HEAD, "k": K},
                        "a gallery of (image, caption) pairs, a Markdown summary"),
    "build_database": ("Build a model's head labels and image database from a zip of your images (for your "
                       "session only; the neighbour searches then use them). Says first how long it will take.",
                       {"label": MODEL, "archive": "a zip file of images (limits: the README's Limits)",
                        "folder": "a folder of the server (only where the app was started with --allow-folders)",
                        "neurons": "also the neuron directions of the 3 MLP layers before the last (the neurons "
                        "endpoints then read them, in your session)", "features": "also an SAE on one block's output "
                        "(the features endpoints then read it)", "feature_block": "that block (negative: from the "
                        "end)", "transcoders": "also a transcoder of every block's MLP, all from one pass over the "
                        "images (the features endpoints read them with dictionary 'transcoder')"},
                       "the build's status, as it goes"),
    "mutual_knowledge": ("Why a zero-shot class: the concepts CLIP's vision and language sides share for an "
                         "image, with mutual information and deletion and insertion curves.",
                         {"label": MODEL, "image_path": IMAGE, "preset": "the classes: a preset of the page, or "
                          "'my descriptor file (JSON)'", "descriptor_file": "a JSON file {class: [descriptors]}",
                          "template": "a prompt template with one {}", "concepts":
                          f"visual concepts, {MIN_PARTS} to {MAX_PARTS}"},
                         "a Markdown summary, the image's concepts (PNG), a Venn figure (PNG), the curves (PNG)"),
}


def described(handler: Callable, api_name: str) -> Callable:
    """`handler` named `api_name`, with the endpoint's description as its docstring (for the API page and MCP)."""
    if api_name not in TOOLS:
        return handler
    description, arguments, returns = TOOLS[api_name]

    if inspect.isgeneratorfunction(handler):  # a handler that yields its status as it goes stays one
        @functools.wraps(handler)
        def tool(*args, **kwargs):
            yield from handler(*args, **kwargs)
    else:
        @functools.wraps(handler)
        def tool(*args, **kwargs):
            return handler(*args, **kwargs)

    lines = [description, "", "Args:"]
    lines += [f"    {name}: {text}" for name, text in arguments.items()]
    tool.__doc__ = "\n".join([*lines, "", "Returns:", f"    {returns}"])
    tool.__name__ = tool.__qualname__ = api_name
    return tool
