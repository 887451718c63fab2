"""Second-order caption-token x image-patch interactions (Moeller, Tilli, Vu, Pado, TMLR 2025).

The score `e_t . e_i / (|e_t| |e_i|)` of a caption and an image splits over pairs of (caption token, image
patch). Take the hidden states `h` entering one block of each tower, references `r` (the caption "<start> !
<end>", padded with zeros; the all-zero image in the normalised input space, both pushed through the same
blocks) and the straight path `r + a (h - r)`. With `J(x)` the Jacobian of a tower's embedding (before
normalisation) with respect to its hidden states at `x`, the integrated per-token tangent

    T[:, s] = 1/steps * sum_{a = 1, 1 - 1/steps, ..., 1/steps} J(r + a (h - r)) @ (h - r) restricted to token s

is one Jacobian-vector product per token (`[D]` each), and the interaction of caption token s with image
position p is

    A[s, p] = T_text[:, s] . T_image[:, p] / (|e_t(h)| |e_i(h)|).

Completeness: summed over every caption token (start to end) and every image position (the class token
included), A tends to `(e_t(h) - e_t(r)) . (e_i(h) - e_i(r)) / (|e_t(h)| |e_i(h)|)` (`Interaction.explained`) as
the steps grow; `Interaction.residual` is what is left at the chosen steps. This is exactly what the authors'
`exclip` package computes, without ever building its `(S * width) x (P * width)` matrix.

Three ways to get them, tested against each other:
- the generic path: `torch.func.jvp`, batched over tokens, through every block from the chosen one on;
- reverse mode, where a caption has fewer tokens than the image: A[s, :] = T_text[:, s] . J(x) delta_p =
  (J(x)^T T_text[:, s])_p . delta_p, one vector-Jacobian product per caption token (`_Tower.paired_with`); an
  attention pooler (SigLIP, PE-Core) reads every token, so this is how their image towers are done;
- the fast path for the default layer (the states entering the last block): only the pooled query of that block
  (the class token; the end token) reaches the embedding, and a tangent on token s enters it only through s's
  key and value (and, for the pooled token, its query and the residual), so the tangents of all tokens come
  from one pass over the block's keys and values, in closed form.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from open_clip.transformer import ResidualAttentionBlock
from PIL import Image

from .errors import InterpretError
from .images import ImageSource, load_image
from .models import ClipModel, layer_index, project
from .segment import SpatialMap, crop_box, upsample
from .towers import resblock_mlp, resblock_output, resblock_qkv

from .limits import MAX_SPEC_CHARS, MAX_STEPS, check_text

TANGENT_BUDGET_BYTES = 96 * 2 ** 20  # memory for one chunk of the batched tangents of the generic path
PATH_BUDGET_BYTES = 12 * 2 ** 20  # autodiff state of one chunk of the path's steps in a block (`_step_chunks`)
# PyTorch keeps forward-mode AD levels in one table for the whole process, and `torch.func.jvp` enters and leaves
# a level on every call: two threads inside it at once break each other's levels (errors, or tangents that are
# silently zero). Every forward-mode computation of this module runs under this lock; the rest of an
# interaction (loading, the towers' forward passes, the scores) runs outside it.
FORWARD_AD_LOCK = threading.Lock()


@dataclass
class Interaction:
    """Interactions between the tokens of one caption and the patches of one image.

    scores: `[S, grid_h, grid_w]`: token s (start and end tokens included, padding cut) x patch; they add up to
        the part of the cosine score the method explains (see `explained`), together with `class_scores`.
    class_scores: `[S]`: each token's interaction with the image's class-token position (not a place).
    tokens: the S tokens as strings ('<start>', 'a', 'red', ..., '<end>').
    explained: `(e_t(h) - e_t(r)) . (e_i(h) - e_i(r)) / (|e_t(h)| |e_i(h)|)`, what all interactions sum to
        exactly in the limit of many steps; residual: `explained - (scores.sum() + class_scores.sum())`.
    cosine: the model's cosine score of the caption and the image; steps, rule: the path's points.
    picture: the image as given (None when a preprocessed tensor was given); box: (left, top, right, bottom) of
        the picture the model saw (its preprocess's centre crop).
    """

    scores: torch.Tensor
    class_scores: torch.Tensor
    tokens: list[str]
    explained: float
    residual: float
    cosine: float
    caption: str
    image_layer: int
    text_layer: int
    steps: int
    rule: str
    picture: Image.Image | None
    box: tuple[int, int, int, int]
    warnings: list[str] = field(default_factory=list)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.scores.shape[1:])

    @property
    def total(self) -> float:
        """The sum of all interactions (patches and the class token)."""
        return float(self.scores.sum() + self.class_scores.sum())

    def token_indices(self, tokens: Sequence[int] | slice | int | None = None) -> list[int]:
        """Token positions from an index, a list of indices (negative from the end) or a slice; None: the
        caption's words (every token but start and end)."""
        count = len(self.tokens)
        if tokens is None:
            return list(range(1, count - 1))
        if isinstance(tokens, slice):
            return list(range(count))[tokens]
        chosen = [tokens] if isinstance(tokens, int) else list(tokens)
        for index in chosen:
            if not -count <= int(index) < count:
                raise InterpretError(f"The caption has tokens 0..{count - 1}; there is no token {index}.")
        return sorted({int(index) % count for index in chosen})

    def span_to_region(self, tokens: Sequence[int] | slice | int | None = None) -> SpatialMap:
        """Where in the image the chosen tokens (default: all words) find their match: their interactions
        summed over the tokens, on the patch grid and upsampled onto the picture."""
        chosen = self.token_indices(tokens)
        if not chosen:
            raise InterpretError("Choose at least one token.")
        grid = self.scores[chosen].sum(dim=0)
        text = " ".join(self.tokens[i] for i in chosen)
        size = self.picture.size if self.picture is not None else (self.box[2], self.box[3])
        return SpatialMap(grid, upsample(grid, size, self.box), self.box, text, self.layers_name)

    def region_to_span(self, box: tuple[float, float, float, float] | None = None) -> torch.Tensor:
        """`[S]`: each token's interactions summed over a box (left, top, right, bottom) of the picture, in its
        pixels (default: the whole image). A patch counts with the fraction of its area inside the box."""
        return torch.einsum("shw,hw->s", self.scores, self.patch_weights(box))

    def patch_weights(self, box: tuple[float, float, float, float] | None = None) -> torch.Tensor:
        """`[grid_h, grid_w]`: the fraction of each patch's area inside `box` (picture pixels)."""
        left, top, right, bottom = self.box
        rows, columns = self.grid
        if box is None:
            return torch.ones(rows, columns)
        x0, y0, x1, y1 = (float(v) for v in box)
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        width, height = self.picture.size if self.picture is not None else (right, bottom)
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise InterpretError(f"The box {tuple(round(v) for v in box)} reaches outside the picture ({width} x "
                                 f"{height} pixels: left and right from 0 to {width}, top and bottom from 0 to "
                                 f"{height}).")
        across = _overlaps(np.linspace(left, right, columns + 1), x0, x1)
        down = _overlaps(np.linspace(top, bottom, rows + 1), y0, y1)
        weights = torch.from_numpy(np.outer(down, across)).float()
        if weights.sum() <= 0:
            raise InterpretError(f"The box {tuple(round(v) for v in box)} covers none of the image the model saw "
                                 f"{self.box}.")
        return weights

    @property
    def layers_name(self) -> str:
        return f"image layer {self.image_layer}, text layer {self.text_layer}"


def _overlaps(edges: np.ndarray, low: float, high: float) -> np.ndarray:
    """The fraction of each interval [edges[i], edges[i + 1]] that lies inside [low, high]."""
    inside = np.clip(np.minimum(edges[1:], high) - np.maximum(edges[:-1], low), 0, None)
    return inside / np.diff(edges)


# --- the towers as functions of the hidden states entering one block ---------------------------------------------

class _Block:
    """One block's pieces as the tangents use them: `qkv` (`[B, n, W]` -> 3 x `[B, H, n, head_dim]`, token by
    token), `scale`, `heads_output` (`[B, H, n, head_dim]` -> `[B, n, W]`) and `mlp` (the MLP branch,
    `[B, n, W]`). Image blocks come from the model's tower family (`towers`); text blocks from open_clip's text
    transformer (`_TextBlock`)."""

    def __init__(self, tower, layer: int):
        self.tower, self.layer = tower, layer
        self.scale = tower.attention_scale(layer)

    def qkv(self, x):
        return self.tower.qkv(self.layer, x)

    def heads_output(self, mixed):
        return self.tower.heads_output(self.layer, mixed)

    def mlp(self, x):
        return self.tower.mlp(self.layer, x)


class _TextBlock:
    """An open_clip text transformer's residual attention block, with `_Block`'s pieces (read as the image
    towers' open_clip blocks are: `towers.resblock_qkv`, ...)."""

    def __init__(self, block: ResidualAttentionBlock):
        self.block = block
        self.heads = block.attn.num_heads
        self.scale = (block.attn.embed_dim // self.heads) ** -0.5

    def qkv(self, x):
        return resblock_qkv(self.block, x, self.heads)

    def heads_output(self, mixed):
        return resblock_output(self.block, mixed)

    def mlp(self, x):
        return resblock_mlp(self.block, x)


@dataclass
class _Tower:
    """One tower seen from the hidden states entering block `layer`.

    layer: the block index (from 0); inputs: `[2, n, width]` the hidden states of the input and of its reference;
    blocks: the blocks from `layer` on (`_Block`s); mask: the attention mask `[n, n]` (or None); pooled: the one
    token the readout reads, when it reads one (the class token, the end token); readout: its final norm and
    projection, `[..., width] -> [..., D]`; or, with pooled None (an average, an attention pooler), the whole
    final stream's readout, `[B, n, width] -> [B, D]`."""

    layer: int
    inputs: torch.Tensor
    blocks: list
    mask: torch.Tensor | None
    pooled: int | None
    readout: Callable[[torch.Tensor], torch.Tensor]

    def embed(self, hidden: torch.Tensor) -> torch.Tensor:
        """`[B, n, width]` hidden states -> `[B, D]` embeddings (not normalised)."""
        if self.pooled is None:
            for block in self.blocks:
                hidden = block_forward(block, hidden, self.mask)
            return self.readout(hidden)
        for block in self.blocks[:-1]:
            hidden = block_forward(block, hidden, self.mask)
        return self.readout(block_forward(self.blocks[-1], hidden, self.mask, query=self.pooled)[:, 0])

    @property
    def closed_form(self) -> bool:
        """Whether the last block's closed form applies: the states entering the last block, one read token."""
        return len(self.blocks) == 1 and self.pooled is not None

    def _path(self, steps: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The points on the straight path `[steps, n, width]` and the step `delta` `[n, width]`."""
        start, reference = self.inputs[0], self.inputs[1]
        delta = start - reference
        alphas = interpolation_points(steps, rule).to(delta)
        return reference + alphas[:, None, None] * delta, delta

    def tangents(self, steps: int, rule: str = "right", fast: bool | None = None) -> torch.Tensor:
        """`[n, D]`: the integrated Jacobian-vector product of every token (see the module's docstring)."""
        if fast is None:
            fast = self.closed_form
        points, delta = self._path(steps, rule)
        if fast:
            if len(self.blocks) != 1 or self.pooled is None:
                raise InterpretError("The fast path needs the hidden states entering the last block, and a "
                                     "readout of one token.")
            row = None if self.mask is None else self.mask[self.pooled]
            return _last_block_tangents(self.blocks[0], self.readout, self.pooled, points, delta, row)
        return _generic_tangents(self.embed, points, delta)

    def reverse_pays(self, others: int, fast: bool | None = None) -> bool:
        """Whether `paired_with` (reverse mode, one pass per other tangent) is cheaper here than this tower's
        own tangents (forward mode, one pass per token): never where the closed form applies."""
        closed = self.closed_form if fast is None else fast
        return not closed and others < self.inputs.shape[1]

    def paired_with(self, others: torch.Tensor, steps: int, rule: str = "right") -> torch.Tensor:
        """`[M, n]`: `others @ self.tangents(...).T` for `others` `[M, D]` (the other tower's tangents), by
        reverse mode: `others[m] . J(x) delta_s = (J(x)^T others[m])_s . delta_s`, so one vector-Jacobian
        product per row of `others` replaces one Jacobian-vector product per token of this tower. An attention
        pooler reads every token (no closed form): there a caption's 10 tokens cost 10 passes, not 197."""
        points, delta = self._path(steps, rule)
        return _reverse_pairs(self.embed, points, delta, others)


def interpolation_points(steps: int, rule: str = "right") -> torch.Tensor:
    """`[steps]` points on the path from the reference (0) to the input (1): 'right' (the paper's and exclip's
    Riemann sum) 1, 1 - 1/steps, ..., 1/steps; 'midpoint' (k - 1/2) / steps, whose error shrinks as 1/steps^2
    instead of 1/steps."""
    ends = torch.arange(steps, 0, -1, dtype=torch.float64) / steps
    if rule == "right":
        return ends
    if rule == "midpoint":
        return ends - 0.5 / steps
    raise InterpretError(f"Unknown integration rule '{rule}': use 'right' (as exclip) or 'midpoint'.")


def block_forward(block: _Block, x: torch.Tensor, mask: torch.Tensor | None,
                  query: int | None = None) -> torch.Tensor:
    """One residual attention block (its `_Block` pieces) on `x` `[B, n, width]` -> `[B, n, width]`, in plain
    operations so that `torch.func` can push tangents through it. With `query`, only that token's output is
    computed (`[B, 1, width]`): all a last block needs."""
    q, k, v = block.qkv(x)  # each [B, H, n, hd]
    if query is not None:
        q, x = q[:, :, query:query + 1], x[:, query:query + 1]
        mask = None if mask is None else mask[query:query + 1]
    logits = (q @ k.transpose(-1, -2)) * block.scale
    if mask is not None:
        logits = logits + mask
    x = x + block.heads_output(torch.softmax(logits, dim=-1) @ v)
    return x + block.mlp(x)


def _step_chunks(points: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
    """The path's points `[steps, n, width]` in chunks of at most `PATH_BUDGET_BYTES` of autodiff state, each
    with its share of the steps: a mean over the steps is the shares' sum of the chunks' means, exactly, and the
    memory is one chunk's (200 steps at once took +573 MiB on the toy)."""
    steps, tokens, width = points.shape
    size = max(1, min(steps, PATH_BUDGET_BYTES // (tokens * width * 4 * 24)))
    return [(points[first:first + size], len(points[first:first + size]) / steps) for first in range(0, steps, size)]


def _generic_tangents(embed, points: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """`[n, D]` by forward-mode autodiff through `embed`, one tangent per token, batched over tokens."""
    return sum(share * _chunk_tangents(embed, chunk, delta) for chunk, share in _step_chunks(points))


def _chunk_tangents(embed, points: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    steps, tokens, width = points.shape
    per_token = steps * tokens * width * 4 * 24  # bytes of tangents one token needs in a block (MLP included)
    chunk = max(1, min(tokens, TANGENT_BUDGET_BYTES // per_token))

    def integrated(tangent: torch.Tensor) -> torch.Tensor:  # [n, width] -> [D]
        _, derivative = torch.func.jvp(embed, (points,), (tangent.expand_as(points),))
        return derivative.mean(dim=0)

    eye = torch.eye(tokens, dtype=delta.dtype, device=delta.device)
    results = []
    for first in range(0, tokens, chunk):
        one_hot = eye[first:first + chunk, :, None] * delta  # [chunk, n, width]: delta on one token each
        results.append(torch.func.vmap(integrated)(one_hot))
    return torch.cat(results)


def _reverse_pairs(embed, points: torch.Tensor, delta: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """`[M, n]`: the integrated tangents of every token dotted with each row of `others` `[M, D]`, by one
    vector-Jacobian product per row (batched), through `embed` `[steps, n, width] -> [steps, D]`."""
    return sum(share * _chunk_pairs(embed, chunk, delta, others) for chunk, share in _step_chunks(points))


def _chunk_pairs(embed, points: torch.Tensor, delta: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    steps, tokens, width = points.shape
    _, pullback = torch.func.vjp(embed, points)
    per_row = steps * tokens * width * 4 * 24  # bytes of gradients one row needs in a block (as the tangents)
    chunk = max(1, min(len(others), TANGENT_BUDGET_BYTES // per_row))

    def paired(other: torch.Tensor) -> torch.Tensor:  # [D] -> [n]
        (gradient,) = pullback(other.expand(steps, -1).to(points))  # [steps, n, width]
        return (gradient.mean(dim=0) * delta).sum(dim=-1)

    return torch.cat([torch.func.vmap(paired)(others[first:first + chunk])
                      for first in range(0, len(others), chunk)])


def _last_block_tangents(block: _Block, readout, pooled: int, points: torch.Tensor, delta: torch.Tensor,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """`[n, D]` in closed form for the last block, where only the pooled query matters.

    For a tangent u on token s: the block's queries, keys and values are computed token by token, so u changes
    only q_s, k_s and v_s (one JVP of `qkv` with every token's tangent at once gives each token's own change).
    With c_s = q . dk_s * scale the pooled row's softmax moves by a_s c_s (e_s - a), so the attention output
    moves by a_s (c_s (v_s - o) + dv_s). The pooled token itself also moves its query and the residual. The
    rest of the block (MLP) and the readout act on the pooled token alone: one JVP each, batched. `mask`: the
    pooled row of the attention mask `[n]` (additive), if any."""
    steps, tokens, width = points.shape
    (q, k, v), (dq, dk, dv) = torch.func.jvp(block.qkv, (points,), (delta.expand_as(points),))  # [steps, H, n, hd]
    query = q[:, :, pooled]  # [steps, H, hd]
    logits = torch.einsum("nhd,nhtd->nht", query, k) * block.scale
    weights = torch.softmax(logits if mask is None else logits + mask, dim=-1)  # [steps, H, n]
    mixed = torch.einsum("nht,nhtd->nhd", weights, v)  # [steps, H, hd]
    key_change = torch.einsum("nhd,nhtd->nht", query, dk) * block.scale  # c_s
    d_mixed = weights[..., None] * (key_change[..., None] * (v - mixed[:, :, None]) + dv)  # [steps, H, n, hd]
    query_logits = torch.einsum("nhd,nhtd->nht", dq[:, :, pooled], k) * block.scale
    query_weights = weights * (query_logits - (weights * query_logits).sum(-1, keepdim=True))
    d_mixed[:, :, pooled] += torch.einsum("nht,nhtd->nhd", query_weights, v)

    pooled_mixed = mixed[:, :, None]  # [steps, H, 1, hd]

    def output_change(change: torch.Tensor) -> torch.Tensor:  # [steps, H, hd] -> [steps, width]
        return torch.func.jvp(block.heads_output, (pooled_mixed,), (change[:, :, None],))[1][:, 0]

    d_pooled = torch.func.vmap(output_change, in_dims=2, out_dims=1)(d_mixed)  # [steps, n, width]
    d_pooled[:, pooled] += delta[pooled]  # the residual connection
    pooled_state = points[:, pooled] + block.heads_output(pooled_mixed)[:, 0]  # [steps, width]

    def rest(y: torch.Tensor) -> torch.Tensor:  # the pooled token after attention -> embedding
        return readout(y + block.mlp(y[:, None])[:, 0])

    def integrated(tangent: torch.Tensor) -> torch.Tensor:  # [steps, width] -> [D]
        return torch.func.jvp(rest, (pooled_state,), (tangent,))[1].mean(dim=0)

    return torch.func.vmap(integrated, in_dims=1)(d_pooled)


def _image_tower(model: ClipModel, batch: torch.Tensor, layer: int) -> _Tower:
    """The image and the all-zero reference image, seen from the states entering block `layer`."""
    tower = model.tower
    index = layer_index(layer, tower.layers, f"The image tower of {model.label}")
    with torch.no_grad():
        hidden = tower.forward(torch.cat([batch, torch.zeros_like(batch)]), blocks=index)
    blocks = [_Block(tower, layer) for layer in range(index, tower.layers)]
    token = tower.read_token
    return _Tower(index, hidden, blocks, None, token, tower.readout if token is not None else tower.embedding)


def _text_parts(model: ClipModel):
    """The text tower's pieces, from a CLIP or a CustomTextCLIP (whose tower is `model.text`)."""
    tower = model.text_tower()
    blocks = list(tower.transformer.resblocks) if tower is not None else []
    if tower is None or not all(type(block) is ResidualAttentionBlock for block in blocks):
        raise InterpretError(f"{model.label}: interaction maps need open_clip's text transformer read out at one "
                             "token (CLIP's end token, SigLIP's last position, CoCa's class token); this model's "
                             "text tower is another kind.")
    return tower, blocks


def _text_tower(model: ClipModel, ids: torch.Tensor, layer: int) -> _Tower:
    """The caption (token ids `[context]`) and a reference caption, seen from the states entering block `layer`.
    A causal tower's reference is '<start> ! <end>' padded with 0, as exclip's, and both are cut after the end
    token (the causal mask makes the tokens after it irrelevant); a tower without a causal mask reads every
    position, so both keep the whole context, and the reference is the empty caption."""
    tower, blocks = _text_parts(model)
    read = int(model.readout_positions(ids[None])[0])
    if model.causal_text_tower() is not None or model.text_class_token():
        end = int(model.end_positions(ids[None])[0])
        length = end + 1 if model.causal_text_tower() is not None else len(ids)  # CoCa's reads past the end
        reference = torch.zeros_like(ids[:length])
        reference[0], reference[2] = ids[0], ids[end]  # start, '!' (id 0), end; padding with 0 as exclip does
    else:
        length = len(ids)
        reference = model.tokenizer([""])[0].to(ids)
    tokens = torch.stack([ids[:length], reference])
    index = layer_index(layer, len(blocks), f"The text tower of {model.label}")
    with torch.no_grad():
        hidden, mask = model.text_stream(tokens)  # CoCa's: its class token appended, read there
        read = hidden.shape[1] - 1 if model.text_class_token() else read
        for block in blocks[:index]:
            hidden = block(hidden, attn_mask=mask)

    def readout(pooled: torch.Tensor) -> torch.Tensor:
        return project(tower.ln_final(pooled), tower.text_projection)

    return _Tower(index, hidden, [_TextBlock(block) for block in blocks[index:]], mask, read, readout)


# --- what an interaction map costs, known before any work ---------------------------------------------------------

def interaction_work(model: ClipModel, caption: str, image_layer: int = -1, text_layer: int = -1,
                     steps: int = 10, fast: bool | None = None) -> float:
    """The multiply-adds `interaction_map` will do with these settings, from the shapes alone (nothing is run):
    the generic path pushes one tangent per token through every block from the chosen one on, at every step
    (tokens x steps x blocks x a block's work), three times a forward pass for forward-mode AD; the last
    block's closed form costs a few passes of that block. `benchmarks/interaction_work.py` compares it with the
    time taken."""
    geometry = model.geometry
    image_start = layer_index(image_layer, geometry.layers, f"The image tower of {model.label}")
    tower, text_blocks = _text_parts(model)
    text_start = layer_index(text_layer, len(text_blocks), f"The text tower of {model.label}")
    causal = model.causal_text_tower() is not None
    text_tokens = len(model.token_strings(caption)) if causal else geometry.context_length + model.text_class_token()
    image_blocks = geometry.layers - image_start
    closed = (image_blocks == 1 if fast is None else fast) and model.tower.read_token is not None
    reverse = not closed and text_tokens < geometry.tokens  # one pass per caption token (`_Tower.paired_with`)
    return (_tower_work(geometry.tokens, geometry.width, image_blocks, steps, closed,
                        text_tokens if reverse else 0)
            + _tower_work(text_tokens, tower.transformer.width, len(text_blocks) - text_start, steps,
                          len(text_blocks) - text_start == 1 if fast is None else fast))


def block_work(tokens: int, width: int) -> float:
    """Multiply-adds of one transformer block's forward pass: projections, MLP (4x width) and attention."""
    return tokens * 12 * width ** 2 + 2 * tokens ** 2 * width


def _tower_work(tokens: int, width: int, blocks: int, steps: int, closed: bool, reverse: int = 0) -> float:
    """Multiply-adds of one tower's tangents (see `interaction_work`): the closed form; or forward mode, one
    pass per token (a JVP: 3 forward passes' work); or `reverse` > 0 passes in reverse mode (one forward pass
    kept, then a VJP, 2 forward passes' work, per pass), through the blocks at every step."""
    block = block_work(tokens, width)
    if closed:
        return 3.0 * steps * block
    if reverse:
        return (1.0 + 2.0 * reverse) * steps * blocks * block
    return 3.0 * tokens * steps * blocks * block


def affordable_steps(model: ClipModel, caption: str, image_layer: int, text_layer: int, steps: int,
                     budget: float) -> tuple[int, float]:
    """(the most steps, at most `steps`, whose `interaction_work` fits `budget` multiply-adds: 0 when not even
    one step does; the work of the steps asked for)."""
    asked = interaction_work(model, caption, image_layer, text_layer, steps)
    per_step = asked / steps  # the work is linear in the steps
    return min(steps, int(budget // per_step)), asked


def interaction_map(model: ClipModel, image: ImageSource | torch.Tensor, caption: str, image_layer: int = -1,
                    text_layer: int = -1, steps: int = 10, rule: str = "midpoint",
                    fast: bool | None = None) -> Interaction:
    """Second-order interactions between the caption's tokens and the image's patches (see the module's
    docstring). `image`: a PIL image (path, bytes, array) or a preprocessed `[1, 3, H, W]` tensor; layers index
    the blocks whose input states are interpolated (-1: the last block); `rule`: the points on the path (see
    `interpolation_points`; 'midpoint', the default, converges as 1/steps^2; 'right' is the paper's and exclip's,
    1/steps); `fast`: force (True) or forbid (False)
    the closed-form path (default: used where it applies, the last block)."""
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InterpretError(f"Steps must be a whole number from 1 to {MAX_STEPS}, not {steps!r}.")
    interpolation_points(1, rule)  # refuse an unknown rule before any work
    picture = None if isinstance(image, torch.Tensor) else load_image(image)
    batch = model.preprocess_images(image if picture is None else [picture])
    if batch.shape[0] != 1:
        raise InterpretError(f"One image at a time, not a batch of {batch.shape[0]}.")
    encoded = model.tokenize(caption)
    token_names = model.token_strings(caption)
    image_tower = _image_tower(model, batch, image_layer)
    text_tower = _text_tower(model, encoded.tokens[0], text_layer)
    count = text_tower.inputs.shape[1]
    if len(token_names) < count and model.causal_text_tower() is None:  # a tower that reads the padding too
        cls = ["<cls>"] if model.text_class_token() else []
        token_names = token_names + ["<pad>"] * (count - len(token_names) - len(cls)) + cls
    if len(token_names) != count:
        token_names = [f"token {i}" for i in range(count)]

    with torch.no_grad():
        image_ends = image_tower.embed(image_tower.inputs)  # [2, D]: the image, the reference
        text_ends = text_tower.embed(text_tower.inputs)
        with FORWARD_AD_LOCK:
            text_tangents = text_tower.tangents(steps, rule, fast)  # [S, D]
            if image_tower.reverse_pays(len(text_tangents), fast):
                pairs = image_tower.paired_with(text_tangents, steps, rule)  # [S, prefix + patches]
            else:
                pairs = text_tangents @ image_tower.tangents(steps, rule, fast).T
    norms = image_ends[0].norm() * text_ends[0].norm()
    pairs = pairs / norms
    explained = float((text_ends[0] - text_ends[1]) @ (image_ends[0] - image_ends[1]) / norms)
    if not (bool(torch.isfinite(pairs).all()) and math.isfinite(explained)):
        raise InterpretError("The interactions of this image and caption are not finite numbers (an embedding of "
                             "length zero?); try another image or caption.")
    rows, columns = model.geometry.grid
    prefix = model.geometry.prefix  # the class token (and registers): not places in the image
    scores = pairs[:, prefix:].reshape(len(token_names), rows, columns)
    size = picture.size if picture is not None else (batch.shape[-1], batch.shape[-2])
    return Interaction(
        scores=scores.cpu(),  # results live on the CPU (they are drawn and printed there)
        class_scores=pairs[:, :prefix].sum(dim=1).cpu(),
        tokens=token_names,
        explained=explained,
        residual=explained - float(pairs.sum()),
        cosine=float(text_ends[0] @ image_ends[0] / norms),
        caption=caption,
        image_layer=image_tower.layer,
        text_layer=text_tower.layer,
        steps=steps,
        rule=rule,
        picture=picture,
        box=crop_box(model, size) if picture is not None else (0, 0, *size),
        warnings=encoded.warnings(),
    )


def parse_tokens(spec: str | Sequence | None, count: int) -> list[int] | None:
    """The page's or the command line's token choice -> positions among the caption's `count` tokens: '' (None:
    all words), '5', '5,6', '5-7' (inclusive), or a list of such items (the page's checkboxes, 'INDEX: token').
    Every number is checked against `count` before a range is expanded."""
    items = [spec] if isinstance(spec, (str, int)) or spec is None else list(spec)
    check_text(", ".join(str(item) for item in items if item is not None), "The token span", MAX_SPEC_CHARS)
    chosen: list[int] = []
    for item in items:
        for part in str(item if item is not None else "").split(","):
            text = part.split(":")[0].strip()
            if not text:
                continue
            try:
                ends = [int(value) for value in text.split("-", 1) if value] if "-" in text[1:] else [int(text)]
            except ValueError:
                raise InterpretError(f"Tokens '{part.strip()}' not understood: write token numbers such as 5, "
                                     "5,6 or 5-7 (0 is the start token).") from None
            for end in ends:
                if not -count <= end < count:
                    raise InterpretError(f"The caption has tokens 0..{count - 1}; there is no token {end}.")
            if ends[-1] < ends[0]:
                raise InterpretError(f"Tokens '{part.strip()}' run backwards: write the first token first "
                                     f"({ends[-1]}-{ends[0]}).")
            chosen.extend(range(ends[0], ends[-1] + 1))
    return chosen or None


def parse_box(spec: str | Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """'left, top, right, bottom' (image pixels) or four numbers -> a box; '' or None -> None (the whole image)."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    if isinstance(spec, str):
        check_text(spec, "The box", MAX_SPEC_CHARS)
    try:
        values = [float(v) for v in (spec.replace(";", ",").split(",") if isinstance(spec, str) else spec)]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InterpretError(f"Box '{spec}' not understood: give left, top, right, bottom in image pixels "
                             "(e.g. 10, 20, 110, 90), or click two corners on the picture.")
    if values[0] == values[2] or values[1] == values[3]:
        raise InterpretError("The box is empty: its corners must differ in both directions.")
    return tuple(values)
