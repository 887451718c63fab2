"""Explanation maps of one image-text score, side by side: where in the image does the model find the text?

One entry point, `explain(model, image, text, method=..., **options)` (as Captum's `attribute`), and one class per
method, each with its paper and, as defaults, the settings of its authors' public code. Every method returns an
`Explanation`: a `segment.SpatialMap` on the patch grid (higher: more of the text there) upsampled onto the
picture, and the model's cosine score. `faithfulness.py` scores the maps against known truth.

| method | what it reads | defaults (authors' code) |
|---|---|---|
| `decomposition` (ours) | every part's share of the score at each token (`segment.topic_map`) | `DEFAULT_PARTS` |
| `decomposition-relative` (ours) | the same, minus the mean map of neutral texts (the TextSpan protocol) | `NEUTRAL_TEXTS` |
| `interaction` (ours) | second-order interactions summed over the caption's tokens (`interact`) | last blocks, 10 steps |
| `readout-attention` | the readout's own attention over the patches (class token, or the attention pooler) | last block |
| `rollout` (Abnar & Zuidema, ACL 2020) | attention rolled out through every block, residual as 0.5 I | all blocks |
| `chefer` (Chefer, Gur & Wolf, ICCV 2021) | gradient-weighted attention, relevance rolled out | last block (their CLIP demo) |
| `grad-cam` (Selvaraju et al., ICCV 2017) | the stream entering the last block, weighted by its mean gradient | as Grad-ECLIP's baseline |
| `legrad` (Bousselham et al., ICCV 2025) | gradients of each layer's own prediction on that layer's attention | last 2 blocks; SigLIP's correction |
| `grad-eclip` (Zhao et al., ICML 2024) | gradient on the read token's attention output, times each value and the query-key cosine | last block |
| `neurons` (Gandelsman et al., ICLR 2025) | the mean activation of the neurons whose second-order directions match the text | 2.2 % of the neurons (200 on ViT-B-32), the 3 MLPs before the last |

Where a tower reads out with an attention pooler (SigLIP, PE-Core, CoCa), "the read token's row" is the pooler's
attention (averaged over its heads); a readout that averages the patches (CLIPA) has no such row, and the three
methods that need one (`readout-attention`, `grad-eclip`, and the rows of `rollout` and `chefer`, which then use
the average) say so or say what they use. Gradients are of the cosine score.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InterpretError
from .images import ImageSource, load_image
from .limits import check_text
from .models import ClipModel, layer_index
from .parts import checked_parts
from .segment import ImageMaps, SpatialMap, crop_box, upsample
from .towers import LatentPooling, side_by_side

NEUTRAL_TEXTS = ("a photo", "an image", "something", "an object")  # what `decomposition-relative` takes away


@dataclass
class Explanation:
    """One method's map of one image-text pair: `map.grid` `[grid_h, grid_w]` (higher: more relevant; each
    method has its own scale), `map.image` upsampled onto the picture; `score`: the model's cosine score."""

    method: str
    map: SpatialMap
    score: float


@dataclass
class Subject:
    """What every method is given: the model, the picture and its preprocessed batch `[1, 3, H, W]`, the text
    and its unit embedding `[D]`."""

    model: ClipModel
    picture: Image.Image
    batch: torch.Tensor
    text: str
    text_unit: torch.Tensor

    @classmethod
    def of(cls, model: ClipModel, image: ImageSource, text: str) -> "Subject":
        text = check_text(text, "The text").strip()
        if not text:
            raise InterpretError("Type a text to explain: what should the map find in the image?")
        picture = load_image(image)
        return cls(model, picture, model.preprocess_images([picture]), text, model.encode_texts([text])[0])

    def score(self, embedding: torch.Tensor) -> torch.Tensor:
        """The cosine score of image embeddings `[B, D]` with the text (differentiable): `[B]`."""
        return F.normalize(embedding.float(), dim=-1) @ self.text_unit.to(embedding.device)

    @functools.cached_property
    def cosine(self) -> float:
        """The model's cosine score of the picture and the text (once per subject, whatever maps it)."""
        with torch.no_grad():
            return float(self.score(self.model.model.encode_image(self.batch))[0])


METHODS: dict[str, type["Method"]] = {}


def method(cls: type["Method"]) -> type["Method"]:
    """Register a method under its `name`."""
    METHODS[cls.name] = cls
    return cls


class Method:
    """One explanation method: `attribute(subject)` -> `[T]` relevance of every token (prefix tokens, then the
    patches in rows) or `[grid_h, grid_w]`; options are keyword arguments of the constructor."""

    name: ClassVar[str]
    title: ClassVar[str]  # how the page names it
    paper: ClassVar[str]

    def attribute(self, subject: Subject) -> torch.Tensor:
        raise NotImplementedError


# --- a forward pass that keeps what the gradient methods read ------------------------------------------------

@dataclass
class _Trace:
    """The tower's pieces at one input: per block, the stream entering it `[1, T, W]`, queries, keys and values
    `[1, H, T, hd]`, attention `[1, H, T, T]` and weighted values; the final stream. Blocks from `start` on are in
    the autograd graph (their inputs and attention can be differentiated against)."""

    inputs: list
    queries: list
    keys: list
    values: list
    attention: list
    mixed: list
    final: torch.Tensor


def _trace(model: ClipModel, batch: torch.Tensor, start: int | None) -> _Trace:
    """Run the tower piece by piece; `start`: the first block whose pieces need gradients (None: none do)."""
    tower = model.tower
    pieces = _Trace([], [], [], [], [], [], batch)
    with torch.no_grad():
        x = tower.embed(batch)
    for layer in range(tower.layers):
        with torch.set_grad_enabled(start is not None and layer >= start):
            if start is not None and layer == start:
                x = x.detach().requires_grad_(True)
            q, k, v = tower.qkv(layer, x)
            weights = tower.attention_weights(layer, q, k)
            mixed = weights @ v
            for store, value in zip((pieces.inputs, pieces.queries, pieces.keys, pieces.values, pieces.attention,
                                     pieces.mixed), (x, q, k, v, weights, mixed)):
                store.append(value)
            x = x + tower.heads_output(layer, mixed)
            x = x + tower.mlp(layer, x)
    pieces.final = x
    return pieces


def _gradient(output: torch.Tensor, inputs: list) -> list:
    return list(torch.autograd.grad(output.sum(), inputs, retain_graph=True))


def _first_layer(model: ClipModel, layer: int, what: str) -> int:
    """`layer` (negative from the end) checked against the image tower's blocks, named `what` in the message."""
    return layer_index(layer, model.geometry.layers, f"{what} (the image tower of {model.label})")


def _readout_row(model: ClipModel, final: torch.Tensor) -> torch.Tensor:
    """`[T]`: how the readout weighs the final tokens: one-hot at the class token, the average, or the attention
    pooler's attention averaged over its heads."""
    tower = model.tower
    if tower.fixed_pool:
        return tower.pool_weights(final.device).to(final)
    with torch.no_grad():
        return tower.pool_parts(final).attention[0].mean(dim=0)


def _read_query(model: ClipModel, method_title: str) -> None:
    tower = model.tower
    if tower.fixed_pool and tower.read_token is None:
        raise InterpretError(f"{method_title} reads the attention of the token the readout reads; {model.label} "
                             "averages its patches instead (it has no such token). The other methods work on it.")


# --- ours -----------------------------------------------------------------------------------------------------

@method
class DecompositionMap(Method):
    """The parts of the cosine score at each token (the decomposition of Gandelsman et al., ICLR 2024, spatially:
    `segment.topic_map`): `parts` "all" (default `segment.DEFAULT_PARTS`: every head at the tokens it reads, every
    MLP and the embedding layer where they write), "heads", "mlps" or "embedding". The parts are exact: with what no
    token holds (the readout's biases, a pooler's MLP) they add up to the score."""

    name, title = "decomposition", "Decomposition (ours)"
    paper = "Gandelsman, Efros & Steinhardt, Interpreting CLIP's image representation via text, ICLR 2024"
    default_relative: ClassVar[tuple[str, ...]] = ()

    def __init__(self, relative_to: tuple[str, ...] | None = None, parts: str | None = None):
        self.relative_to = tuple(self.default_relative if relative_to is None else relative_to)
        self.parts = checked_parts(parts)

    def attribute(self, subject):
        maps = ImageMaps(subject.model, subject.picture)
        return maps.topic(subject.text, relative_to=list(self.relative_to) or None, parts=self.parts).grid


@method
class RelativeDecompositionMap(DecompositionMap):
    """The decomposition map minus the mean map of neutral texts (`NEUTRAL_TEXTS`): what the image gives every
    text (CLIP's shared direction) taken away, as the TextSpan protocol takes away the class prompts' mean."""

    name, title = "decomposition-relative", "Decomposition, relative (ours)"
    default_relative = NEUTRAL_TEXTS


@method
class InteractionMap(Method):
    """Second-order interactions of the caption's tokens and the image's patches (Moeller et al., TMLR 2025:
    `interact.interaction_map`), summed over every token of the caption."""

    name, title = "interaction", "Interactions (ours)"
    paper = "Moeller, Tilli, Vu & Pado, Explaining caption-image interactions in CLIP models, TMLR 2025"

    def __init__(self, image_layer: int = -1, text_layer: int = -1, steps: int = 10):
        self.image_layer, self.text_layer, self.steps = image_layer, text_layer, steps

    def attribute(self, subject):
        from .interact import interaction_map

        result = interaction_map(subject.model, subject.picture, subject.text, self.image_layer, self.text_layer,
                                 self.steps)
        return result.scores.sum(dim=0)


# --- attention ------------------------------------------------------------------------------------------------

@method
class ReadoutAttention(Method):
    """The attention of the token the readout reads (the class token, in the last block) over the patches,
    averaged over the heads; with an attention pooler, the pooler's attention averaged over its heads."""

    name, title = "readout-attention", "Readout attention"
    paper = "Dosovitskiy et al., An image is worth 16x16 words, ICLR 2021 (attention maps of the class token)"

    def attribute(self, subject):
        model = subject.model
        with torch.no_grad():
            if not model.tower.fixed_pool:
                final = model.tower.forward(subject.batch)
                return model.tower.pool_parts(final).attention[0].mean(dim=0)
            _read_query(model, "Readout attention")
            pieces = _trace(model, subject.batch, None)
            return pieces.attention[-1][0, :, model.tower.read_token].mean(dim=0)


@method
class Rollout(Method):
    """Attention rollout (Abnar & Zuidema, ACL 2020): each block's attention averaged over its heads, the residual
    connection as 0.5 A + 0.5 I, multiplied through the blocks; the readout's row of the product (the class
    token's, the average, or the pooler's attention spread through it)."""

    name, title = "rollout", "Attention rollout"
    paper = "Abnar & Zuidema, Quantifying attention flow in transformers, ACL 2020"

    def attribute(self, subject):
        model = subject.model
        with torch.no_grad():
            pieces = _trace(model, subject.batch, None)
            tokens = pieces.final.shape[1]
            eye = torch.eye(tokens, device=pieces.final.device)
            rolled = eye
            for attention in pieces.attention:
                rolled = (0.5 * attention[0].mean(dim=0) + 0.5 * eye) @ rolled
            return _readout_row(model, pieces.final) @ rolled


@method
class GradientAttention(Method):
    """Gradient-weighted attention (Chefer, Gur & Wolf, ICCV 2021, "generic attention-model explainability"):
    from R = I, each block from `start_layer` on adds mean_heads(relu(dA * A)) @ R, where dA is the gradient of
    the score with respect to the block's attention; the readout's row of R. Their CLIP demo starts at the last
    block (`start_layer=-1`)."""

    name, title = "chefer", "Gradient x attention (Chefer)"
    paper = "Chefer, Gur & Wolf, Generic attention-model explainability for bi-modal transformers, ICCV 2021"

    def __init__(self, start_layer: int = -1):
        self.start_layer = start_layer

    def attribute(self, subject):
        model = subject.model
        start = _first_layer(model, self.start_layer, "The first layer of the relevance")
        pieces = _trace(model, subject.batch, start)
        score = subject.score(model.tower.embedding(pieces.final))
        gradients = _gradient(score, pieces.attention[start:])
        tokens = pieces.final.shape[1]
        relevance = torch.eye(tokens, device=pieces.final.device)
        for attention, gradient in zip(pieces.attention[start:], gradients):
            weighted = (gradient * attention.detach()).clamp(min=0)[0].mean(dim=0)  # [T, T]
            relevance = relevance + weighted @ relevance
        return _readout_row(model, pieces.final.detach()) @ relevance


# --- gradients ------------------------------------------------------------------------------------------------

@method
class GradCAM(Method):
    """Grad-CAM (Selvaraju et al., ICCV 2017) on a vision transformer: the tokens entering block `layer` (the last,
    as Grad-ECLIP's baseline uses them), each channel weighted by the score's gradient averaged over the tokens;
    relu of the weighted sum at each patch."""

    name, title = "grad-cam", "Grad-CAM"
    paper = "Selvaraju et al., Grad-CAM: visual explanations from deep networks, ICCV 2017"

    def __init__(self, layer: int = -1):
        self.layer = layer

    def attribute(self, subject):
        model = subject.model
        start = _first_layer(model, self.layer, "Grad-CAM's layer")
        pieces = _trace(model, subject.batch, start)
        features = pieces.inputs[start]
        (gradient,) = _gradient(subject.score(model.tower.embedding(pieces.final)), [features])
        weights = gradient[0].mean(dim=0)  # [W]
        return (features.detach()[0] @ weights).clamp(min=0)


@method
class LeGrad(Method):
    """LeGrad (Bousselham et al., ICCV 2025): for each block from `layer_index` on, the model's own prediction
    from that block's output (the readout applied to it: the tokens' mean through the final norm and projection;
    or the attention pooler applied to them), the gradient of its score with respect to that block's attention
    (the pooler's attention, for a pooled tower), relu, averaged over heads and query rows; summed over the
    blocks, min-max normalised. Authors' defaults: the last 2 blocks (`layer_index=-2`); on SigLIP-like towers
    their correction: the map of the text "a photo of a" is computed too, and where its normalised map exceeds
    0.8 the map is set to 0."""

    name, title = "legrad", "LeGrad"
    paper = "Bousselham et al., LeGrad: an explainability method for vision transformers via feature formation " \
            "sensitivity, ICCV 2025"
    EMPTY_TEXT, CORRECTION_THRESHOLD = "a photo of a", 0.8

    def __init__(self, layer_index: int = -2, correction: bool = True):
        self.layer_index, self.correction = layer_index, correction

    def attribute(self, subject):
        model = subject.model
        start = _first_layer(model, self.layer_index, "LeGrad's first layer")
        pieces = _trace(model, subject.batch, start)
        outputs = pieces.inputs[start + 1:] + [pieces.final]
        relevance = self._relevance(model, pieces, outputs, start, subject.text_unit)
        if self.correction and isinstance(model.tower, LatentPooling) and model.tower.pooler is not None:
            empty = self._relevance(model, pieces, outputs, start, model.encode_texts([self.EMPTY_TEXT])[0])
            relevance = torch.where(_min_max(empty) > self.CORRECTION_THRESHOLD, 0.0, relevance)
        return _min_max(relevance)

    @staticmethod
    def _relevance(model: ClipModel, pieces: _Trace, outputs: list, start: int,
                   text_unit: torch.Tensor) -> torch.Tensor:
        tower, total = model.tower, 0.0
        for layer, stream in enumerate(outputs, start):
            if tower.fixed_pool:
                embedding = tower.readout(stream.mean(dim=1))
                attention = pieces.attention[layer]
            else:
                parts = tower.pool_parts(stream)
                embedding, attention = tower.pooled_embedding(parts), parts.attention
            score = F.normalize(embedding.float(), dim=-1) @ text_unit
            (gradient,) = _gradient(score, [attention])
            per_key = gradient.clamp(min=0)[0]  # [H, T, T] or the pooler's [P, T]
            total = total + (per_key.mean(dim=(0, 1)) if per_key.dim() == 3 else per_key.mean(dim=0))
        return total


@method
class GradECLIP(Method):
    """Grad-ECLIP (Zhao et al., ICML 2024): in the last block, the gradient of the score with respect to the read
    token's attention output (before the output projection, heads side by side) weighs every token's value
    channel by channel; each token is scaled by the min-max normalised cosine of the read token's query and its key
    (their `withksim`, on by default); relu of the sum. With an attention pooler: the pooler's query, keys, values
    and output. Their script recomputes the last block with one head over the whole width; here the model's own
    heads are kept (the map is of the model as it is)."""

    name, title = "grad-eclip", "Grad-ECLIP"
    paper = "Zhao et al., Gradient-based visual explanation for transformer-based CLIP, ICML 2024"

    def __init__(self, key_similarity: bool = True):
        self.key_similarity = key_similarity

    def attribute(self, subject):
        model = subject.model
        tower = model.tower
        if tower.fixed_pool:
            _read_query(model, "Grad-ECLIP")
            last = tower.layers - 1
            pieces = _trace(model, subject.batch, last)
            read = tower.read_token
            (gradient,) = _gradient(subject.score(tower.embedding(pieces.final)), [pieces.mixed[last]])
            output_gradient = side_by_side(gradient)[0, read]  # [W]
            values = side_by_side(pieces.values[last].detach())[0]  # [T, W]
            query = side_by_side(pieces.queries[last].detach())[0, read]
            keys = side_by_side(pieces.keys[last].detach())[0]
        else:
            with torch.no_grad():
                final = tower.forward(subject.batch)
            with torch.enable_grad():
                parts = tower.pool_parts(final)
                mixed = parts.mixed.detach().requires_grad_(True)
                (gradient,) = _gradient(subject.score(tower.embedding_from_mixed(mixed)), [mixed])
            output_gradient = gradient[0].flatten()  # [P * hd]
            values, keys = parts.values.detach()[0].flatten(1), parts.keys.detach()[0].flatten(1)  # [T, P * hd]
            query = parts.query.detach().flatten()
        weights = values @ output_gradient  # [T]
        if self.key_similarity:
            weights = weights * _min_max(F.cosine_similarity(keys, query[None], dim=-1))
        return weights.clamp(min=0)


def _min_max(values: torch.Tensor) -> torch.Tensor:
    low, high = values.min(), values.max()
    return (values - low) / (high - low).clamp(min=1e-12)


@method
class NeuronMap(Method):
    """The second-order lens's zero-shot segmentation (Gandelsman, Efros & Steinhardt, ICLR 2025; their
    compute_segmentation.py): of the neurons of the MLPs of `layers` (default: the three before the last, their 8,
    9 and 10 of ViT-B-32), the `neurons` whose second-order directions (`neurons.stored_directions`) best match the
    text (largest |direction . text|, either sign), and their mean activation at each patch. `neurons` defaults to
    their share: 200 of ViT-B-32's 9,216 neurons in those layers (`NEURON_SHARE`), at least one."""

    name, title = "neurons", "Neurons (second-order lens)"
    paper = "Gandelsman, Efros & Steinhardt, Interpreting the second-order effects of neurons in CLIP, ICLR 2025"
    NEURON_SHARE = 200 / (3 * 3072)

    def __init__(self, layers: tuple[int, ...] | None = None, neurons: int | None = None):
        self.layers = tuple(layers) if layers is not None else None
        self.neurons = None if neurons is None else int(neurons)

    def attribute(self, subject):
        from .neurons import default_neuron_layers, neuron_activations, stored_directions

        model = subject.model
        layers = [layer_index(layer, model.geometry.layers, model.label)
                  for layer in (self.layers or default_neuron_layers(model))]
        text = subject.text_unit.float().cpu()
        matches = torch.cat([(stored_directions(model, layer).directions @ text).abs() for layer in layers])
        count = self.neurons if self.neurons is not None else max(1, round(self.NEURON_SHARE * len(matches)))
        chosen = matches.topk(min(count, len(matches))).indices
        activations = neuron_activations(model, subject.batch, layers)
        every = torch.cat([activations[layer][0] for layer in layers], dim=-1)  # [T, neurons of all layers]
        return every[:, chosen.to(every.device)].mean(dim=1)


# --- the entry point -------------------------------------------------------------------------------------------

def method_named(name: str, **options) -> Method:
    """The method registered as `name`, with its options."""
    if name not in METHODS:
        raise InterpretError(f"Unknown explanation method '{name}'. Choose one of: {', '.join(METHODS)}.")
    try:
        return METHODS[name](**options)
    except TypeError as error:
        raise InterpretError(f"Method '{name}' does not take these options: {error}.") from None


def explain(model: ClipModel, image: ImageSource | Subject, text: str | None = None, method: str = "decomposition",
            **options) -> Explanation:
    """Where in `image` `model` finds `text`, by `method` (one of `METHODS`; options: the method's own, see its
    class). A `Subject` may be given instead of the image and text, to map one pair by several methods."""
    subject = image if isinstance(image, Subject) else Subject.of(model, image, text)
    chosen = method_named(method, **options)
    relevance = chosen.attribute(subject).detach().float().cpu()
    geometry = model.geometry
    if relevance.dim() == 1:
        relevance = relevance[geometry.prefix:].reshape(*geometry.grid)  # prefix tokens are not places
    box = crop_box(model, subject.picture.size)
    spatial = SpatialMap(relevance, upsample(relevance, subject.picture.size, box), box, subject.text,
                         METHODS[method].title)
    return Explanation(method, spatial, subject.cosine)
