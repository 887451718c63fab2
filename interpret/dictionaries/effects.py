"""One image's features: which fire where, who writes them, what removing or adding them does to the score, and
the tower with its MLPs replaced by their transcoders.

A feature of an SAE of block l writes into the stream after block l; a feature of a transcoder of MLP l writes
into the same place (an MLP's output is added to the stream at the end of its block), so removing or adding a
feature is the same edit for both: its write, taken from or added to the stream after block l, and the rest of
the tower run again (attention and norms free).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import InterpretError
from ..models import ClipModel
from ..towers.base import layer_norm_inv_std
from .atlas import FeatureAtlas, token_choice
from .model import Dictionary


@torch.no_grad()
def stream_and_inputs(model: ClipModel, dictionary: Dictionary, images) -> tuple[torch.Tensor, torch.Tensor]:
    """(`[B, T, W]` the stream after the dictionary's block, `[B, T, W]` what the dictionary reads: that stream for
    an SAE, the MLP's input for a transcoder), float32."""
    tower, layer = model.tower, dictionary.config.layer
    if dictionary.config.stream == "readout":
        x = tower.forward(model.preprocess_images(images)).float()
        return x, tower.readout_input(x)[:, None].float()
    x = tower.embed(model.preprocess_images(images))
    for index in range(layer):
        x = tower.block(index, x)[0]
    if not dictionary.is_transcoder:
        x = tower.block(layer, x)[0].float()
        return x, x
    x = x + tower.heads_output(layer, tower.attend(layer, *tower.qkv(layer, x)))
    read = tower.mlp_norm(layer)(x)
    return (x + tower.mlp_from_input(layer, read)).float(), read.float()


@torch.no_grad()
def image_features(model: ClipModel, dictionary: Dictionary, images) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor]:
    """(the stream after the dictionary's block `[B, T, W]`, what the dictionary reads `[B, T, W]`, its features
    `[B, T, F]`; tokens it does not read are 0), on the CPU."""
    states, inputs = stream_and_inputs(model, dictionary, images)
    states, inputs = states.cpu(), inputs.cpu()
    codes = torch.zeros(*inputs.shape[:2], dictionary.config.features)
    choice = token_choice(model, dictionary)
    codes[:, choice] = dictionary.encode(inputs[:, choice])
    return states, inputs, codes


def feature_writes(dictionary: Dictionary, inputs: torch.Tensor, codes: torch.Tensor, features: Sequence[int]
                   ) -> torch.Tensor:
    """`[B, T, n, W]`: what each chosen feature puts into the stream at each token (its activation times its
    decoder row, in the stream's units: the normalisation undone at that token)."""
    scale = torch.as_tensor(dictionary.write_scale(inputs.cpu())).expand(*inputs.shape[:2], 1)
    chosen = list(features)
    return codes[..., chosen, None] * dictionary.W_dec[chosen].detach() / scale[..., None]


@torch.no_grad()
def embedding_from(model: ClipModel, states: torch.Tensor, layer: int) -> torch.Tensor:
    """`[B, D]`: the image embedding (not normalised) from the stream after block `layer`, `[B, T, W]`."""
    tower = model.tower
    x = states.to(model.device)
    for index in range(layer + 1, tower.layers):
        x = tower.block(index, x)[0]
    return tower.embedding(x).float()


@torch.no_grad()
def intervened_scores(model: ClipModel, dictionary: Dictionary, images, texts: torch.Tensor,
                      features: Sequence[int], strength: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(`[B, M]` cosine scores of the images with unit texts `[M, D]` as they are, `[n, B, M]` with each chosen
    feature removed from every token where it fires (`strength` None), or added at every token the dictionary
    reads with activation `strength`), the rest of the tower run again after the dictionary's block."""
    _per_token(dictionary)
    states, inputs, codes = image_features(model, dictionary, images)
    layer = dictionary.config.layer
    texts = texts.float().cpu()
    base = F.normalize(embedding_from(model, states, layer).cpu(), dim=-1) @ texts.T
    changed = []
    for feature in features:
        if strength is None:
            delta = -feature_writes(dictionary, inputs, codes, [feature])[:, :, 0]
        else:
            added = torch.zeros_like(codes)
            added[:, token_choice(model, dictionary), feature] = float(strength)
            delta = feature_writes(dictionary, inputs, added, [feature])[:, :, 0]
        changed.append(states + delta.to(states))
    if not changed:
        return base, base.new_zeros(0, *base.shape)
    batch = len(states)
    embeddings = embedding_from(model, torch.cat(changed), layer).cpu()  # every change in one pass
    scores = F.normalize(embeddings, dim=-1) @ texts.T
    return base, scores.reshape(len(changed), batch, -1)


def _per_token(dictionary: Dictionary) -> None:
    if dictionary.config.stream == "readout":
        raise InterpretError("The SAE of the readout reads one vector an image: its features have no tokens to map, "
                             "to take out or to split over the stream's parts.")


@dataclass
class FeatureWriters:
    """Who writes feature `feature` (of the dictionary at block `layer`): its pre-activation, averaged over the
    tokens where it fires (weighted by its activation), split exactly into the parts of the stream it reads: the
    embedding layer, every head of the blocks before it and of its own block (`heads` `[blocks, H]`), every MLP
    neuron of the blocks before it (and, for an SAE, of its own block: `neurons` `[blocks, N]`), and the rest
    (biases: of the heads' and MLPs' outputs, of the norm, of the dictionary). `tokens`: how many tokens it fired
    on; `pre_activation`: their weighted mean (= the sum of the parts)."""

    feature: int
    layer: int
    heads: torch.Tensor
    neurons: torch.Tensor
    embedding: float
    rest: float
    pre_activation: float
    tokens: int

    def top_heads(self, count: int = 5) -> list[tuple[int, int, float]]:
        order = self.heads.abs().flatten().argsort(descending=True)[:count]
        heads = self.heads.shape[1]
        return [(int(i) // heads, int(i) % heads, float(self.heads.flatten()[i])) for i in order]

    def top_neurons(self, count: int = 5) -> list[tuple[int, int, float]]:
        order = self.neurons.abs().flatten().argsort(descending=True)[:count]
        width = self.neurons.shape[1]
        return [(int(i) // width, int(i) % width, float(self.neurons.flatten()[i])) for i in order]


def _read_direction(model: ClipModel, dictionary: Dictionary, feature: int, x: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """How feature `feature` reads the stream `x` `[B, T, W]` where it reads (after its block, or before its MLP),
    linearised at this input: (a direction `r` `[W]`, a scale per token `[B, T]`): its pre-activation is `scale *
    (part . r)` summed over the stream's parts, plus a constant. Norms' statistics fixed; their centring goes into
    `r`."""
    read = dictionary.W_enc[:, feature].detach().float().to(x.device)  # [W]
    if dictionary.is_transcoder:  # it reads the MLP's norm: gamma * C x / sigma + beta, then its own scale
        norm = model.tower.mlp_norm(dictionary.config.layer)
        if norm.weight is not None:
            read = read * norm.weight.detach().float()
        read = read - read.mean()
        inverse = layer_norm_inv_std(norm, x).float()
        _, _, scale = dictionary.normalised(norm(x).float().cpu())
        return read, inverse * scale.to(x.device).expand(*x.shape[:2], 1)[..., 0]
    if dictionary.config.normalisation == "layer_norm":
        read = read - read.mean()  # the norm's centring, applied to the read instead of the stream
    _, _, scale = dictionary.normalised(x.cpu())
    return read, scale.to(x.device).expand(*x.shape[:2], 1)[..., 0]


@torch.no_grad()
def pre_activation_parts(model: ClipModel, dictionary: Dictionary, images, feature: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feature `feature`'s pre-activation at every token split over the parts of the stream it reads: (heads
    `[B, blocks, H, T]`, neurons `[B, blocks', N, T]`, embedding layer `[B, T]`, rest `[B, T]`, pre-activation
    `[B, T]`); they add up to it exactly (the dictionary's input normalisation and the MLP's norm are linear at
    this input: a scale, or a norm's fixed statistics). An SAE of block l reads blocks 0..l (blocks' = l + 1); a
    transcoder of MLP l reads the heads of blocks 0..l and the MLPs of blocks 0..l-1 (blocks' = l)."""
    _per_token(dictionary)
    tower = model.tower
    layer = dictionary.config.layer
    x = tower.embed(model.preprocess_images(images)).float()
    embedded = x  # the embedding layer's part, read with the direction found below
    heads, neurons = [], []
    mixed_all = []
    for index in range(layer + 1):
        q, k, v = tower.qkv(index, x)
        mixed = tower.attend(index, q, k, v)
        mixed_all.append(mixed)
        x = x + tower.heads_output(index, mixed)
        if index == layer and dictionary.is_transcoder:
            break
        neurons.append(tower.mlp_neurons(index, x).float())
        x = x + tower.mlp(index, x)
    read, per_token = _read_direction(model, dictionary, feature, x)
    u, _, _ = dictionary.normalised((tower.mlp_norm(layer)(x) if dictionary.is_transcoder else x).cpu())
    pre = dictionary.pre_activations(u)[..., feature].to(x.device)
    embedding = (embedded @ read) * per_token
    for index, mixed in enumerate(mixed_all):
        through = tower.out_maps(index).float() @ read  # [H, hd]
        part = torch.einsum("bhtk,hk->bht", mixed.float(), through)
        scale = tower.out_scale(index, mixed)
        heads.append((part if scale is None else part * scale[:, None, :]) * per_token[:, None, :])
    neurons = [(units * (tower.mlp_writes(index).float() @ read)).transpose(1, 2) * per_token[:, None, :]
               for index, units in enumerate(neurons)]
    heads = torch.stack(heads, dim=1)
    neurons = (torch.stack(neurons, dim=1) if neurons else
               heads.new_zeros(heads.shape[0], 0, tower.mlp_writes(0).shape[0], heads.shape[-1]))
    rest = pre - heads.sum(dim=(1, 2)) - neurons.sum(dim=(1, 2)) - embedding
    return heads, neurons, embedding, rest, pre


@torch.no_grad()
def feature_writers(model: ClipModel, dictionary: Dictionary, images, feature: int) -> FeatureWriters:
    """`FeatureWriters` of `feature` over `images` (its top images, say), on the tokens the dictionary reads."""
    heads, neurons, embedding, rest, pre = pre_activation_parts(model, dictionary, images, feature)
    codes = image_features(model, dictionary, images)[2][..., feature].to(pre.device)  # [B, T]
    weights = torch.zeros_like(codes)
    choice = token_choice(model, dictionary)
    weights[:, choice] = codes[:, choice]
    total = weights.sum().clamp(min=1e-12)

    def mean(values: torch.Tensor) -> torch.Tensor:  # [B, ..., T] -> [...], weighted by the activation
        return torch.einsum("b...t,bt->...", values, weights) / total

    return FeatureWriters(feature, dictionary.config.layer, mean(heads).cpu(), mean(neurons).cpu(),
                          float(mean(embedding)), float(mean(rest)), float(mean(pre)), int((weights > 0).sum()))


@torch.no_grad()
def replaced_embeddings(model: ClipModel, images, transcoders: dict[int, Dictionary]) -> torch.Tensor:
    """`[B, D]`: the image embeddings (not normalised) of the tower with the MLP of each block in `transcoders`
    replaced by its transcoder's prediction (every other part computed as usual, attention and norms free)."""
    for layer, transcoder in transcoders.items():
        if not transcoder.is_transcoder or transcoder.config.layer != layer:
            raise InterpretError(f"{transcoder.config.name} cannot stand in for MLP {layer}.")
    tower = model.tower
    x = tower.embed(model.preprocess_images(images))
    for index in range(tower.layers):
        x = x + tower.heads_output(index, tower.attend(index, *tower.qkv(index, x)))
        read = tower.mlp_norm(index)(x)
        if index in transcoders:
            x = x + transcoders[index](read.float().cpu()).to(x)
        else:
            x = x + tower.mlp_from_input(index, read)
    return tower.embedding(x).float()


@dataclass
class FeatureReport:
    """One image's features: the `top` that fire most (their largest activation on a patch, `peaks`), how many
    patches each fires on, their maps `[n, grid_h, grid_w]`, their names (from the atlas, or None), and with a
    caption, the cosine score (`cosine`) and its change when each is removed from every token (`changes`)."""

    layer: int
    features: list[int]
    peaks: torch.Tensor
    patches: torch.Tensor
    maps: torch.Tensor
    names: list[str] | None
    caption: str | None
    cosine: float | None
    changes: torch.Tensor | None
    warnings: list[str]
    kind: str = "sae"


def explain_features(model: ClipModel, image, caption: str | None = None, layer: int | None = None, top: int = 10,
                     dictionary: Dictionary | None = None, atlas: FeatureAtlas | None = None,
                     kind: str = "sae") -> FeatureReport:
    """The `top` features of a dictionary (`kind` "sae" of block `layer` or "transcoder" of MLP `layer`, default:
    the model's stored one; or `dictionary`) that fire most on `image`, where, and (with `caption`) what removing
    each from the forward pass does to the image-caption score."""
    from ..images import load_image
    from .store import default_layer, stored_dictionary

    if dictionary is None:
        dictionary, atlas = stored_dictionary(model, kind, default_layer(model) if layer is None else layer)
    _per_token(dictionary)
    picture = load_image(image)
    _, _, codes = image_features(model, dictionary, [picture])
    prefix = model.geometry.prefix
    patches = codes[0, prefix:]  # [P, F]
    peaks = patches.amax(dim=0)
    chosen = [int(f) for f in peaks.argsort(descending=True)[:top] if peaks[f] > 0]
    warnings, cosine, changes = [], None, None
    kept = None
    if caption:
        encoded = model.tokenize(caption)
        warnings, kept = encoded.warnings(), encoded.kept[0]
        base, changed = intervened_scores(model, dictionary, [picture], model.embed_tokens(encoded), chosen)
        cosine = float(base[0, 0])
        changes = (changed[:, 0, 0] - base[0, 0]) if chosen else torch.zeros(0)
    names = [atlas.labels[f][0] for f in chosen] if atlas is not None and atlas.labels else None
    return FeatureReport(dictionary.config.layer, chosen, peaks[chosen], (patches[:, chosen] > 0).sum(dim=0),
                         patches[:, chosen].T.reshape(len(chosen), *model.geometry.grid), names, kept, cosine,
                         changes, warnings, dictionary.config.kind)
