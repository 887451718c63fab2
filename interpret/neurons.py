"""Below the heads: every MLP neuron's second-order effect on the image embedding (Gandelsman, Efros & Steinhardt,
"Interpreting the Second-Order Effects of Neurons in CLIP", ICLR 2025), exact, per head, on every family.

A neuron n of MLP layer l writes `a_n[t] w_n` into the residual stream at token t (`VisionTower.mlp_neurons`,
`mlp_writes`: the hidden unit after the activation, the gated unit of a SwiGLU). Its *second-order effect* is what
reaches the image embedding (the un-normalised output of `encode_image`) through the attention heads of the later
layers, each read directly (the head's output straight to the readout), with this image's attention patterns and
every norm's statistics fixed and the later MLPs left out: the paper's definition. A later head (l', h) reads the
write at source token t through its pre-attention norm and value map, `a_n[t] / sigma_l'[t] * w_n C diag(gamma)
W_V,h` (`value_maps`, `value_inv_std`), mixes it into its output at every token r with its attention `A[r, t]`,
and the readout reads token r with its coefficient for each readout channel p (`readout_linearised`: the class
token's 1 / std; an attention pooler's attention / std per pooling head; the pooled patches' weights). So

    effect_n = sum_{l', h, p} c[l', h, p, n] u[l', h, p, n],
    c[l', h, p, n] = sum_t reads[l', h, p, t] a_n[t],   reads[l', h, p, t] = sum_r coeff[p, r] s[r] A[r, t] / sigma[t]

(s: 1 / the std of a norm between the heads and their projection, EVA's sub-LN; else 1) with the image-independent
`u[l', h, p, n] = (w_n C diag(gamma) W_V,h) W_O,h maps_p`: a neuron's `write_values` through the head's folded map
(`ClipModel.folded_head_weights`). The image-dependent part is one `[T] x [T, N]` product per head: each later
head's share of a neuron's effect comes free, and nothing of size `[B, L', H, N, D]` is built.

Biases and norm means. A norm's mean is linear in the stream, so its centring (C) applies to the neuron's write
exactly, as to any other part of the stream: nothing of it is shared out. The biases (the later heads' value and
output biases, the norms' shifts, the MLP's own output bias) do not move with any neuron, so they are in no neuron's
effect. The authors' code gives every neuron an equal share (1/N) of them: a constant per image that their centring
by the mean effect over a set of images takes away again, so the directions and the significant images are the
same.

Over a set of images (`neuron_directions`), each neuron's direction is the first singular vector of its centred
effects on its top images (the paper's: the 100 images with the largest centred effect, sign by majority), in two
streaming passes whose memory does not grow with the number of images (see `neuron_directions`).
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .engines import Block, LocalEngine, run_blocks
from .errors import InterpretError
from .images import list_images
from .integrity import LoadedFiles, write_json_atomic
from .jobs import checkpoint
from .models import ClipModel, layer_index


@dataclass
class NeuronEffects:
    """The second-order effects of the N neurons of MLP layer `layer` on B images, kept factorised.

    activations: `[B, T, N]` each neuron's activation at each token (`VisionTower.mlp_neurons`).
    reads: `[B, L', H, P, T]` how a unit write at token t reaches the embedding through head h of later layer
        `later[i]` and readout channel p (P: 1, or an attention pooler's heads).
    write_values: `[L', H, N, hd]` a neuron's unit write as the later heads' values see it (image-independent).
    folded: `[L', H, P * hd, D]` the later heads' maps into the joint space, per readout channel.
    embedding: `[B, D]` the image embedding (not normalised).
    """

    layer: int
    later: tuple[int, ...]
    activations: torch.Tensor
    reads: torch.Tensor
    write_values: torch.Tensor
    folded: torch.Tensor
    embedding: torch.Tensor
    grid: tuple[int, int]
    prefix: int
    _effects: torch.Tensor | None = field(default=None, repr=False)

    @property
    def neurons(self) -> int:
        return self.activations.shape[-1]

    @cached_property
    def coefficients(self) -> torch.Tensor:
        """`[B, L', H, P, N]`: how much of each neuron's unit-effect through head (later[i], h) and channel p this
        image carries: `sum_t reads[..., t] activations[t, n]`."""
        return torch.einsum("blhpt,btn->blhpn", self.reads, self.activations)

    @property
    def effects(self) -> torch.Tensor:
        """`[B, N, D]`: every neuron's second-order effect on the embedding (computed once, on first use)."""
        if self._effects is None:
            self._effects = self.effects_of(range(self.neurons))
        return self._effects

    def effects_of(self, neurons: Sequence[int]) -> torch.Tensor:
        """`[B, n, D]`: the chosen neurons' effects, summed over the later heads."""
        chosen = torch.as_tensor(list(neurons), dtype=torch.long, device=self.activations.device)
        return through_heads(self.coefficients[..., chosen], self.write_values[:, :, chosen], self.folded)

    def head_effects(self, neurons: Sequence[int]) -> torch.Tensor:
        """`[B, n, L', H, D]`: each later head's share of the chosen neurons' effects (they sum to `effects_of`)."""
        chosen = torch.as_tensor(list(neurons), dtype=torch.long, device=self.activations.device)
        coefficients, values = self.coefficients[..., chosen], self.write_values[:, :, chosen]
        batch, later, heads, channels, count = coefficients.shape
        shares = coefficients.new_zeros(batch, count, later, heads, self.folded.shape[-1])
        for i in range(later):
            for h in range(heads):
                shares[:, :, i, h] = _through_one_head(coefficients[:, i, h], values[i, h], self.folded[i, h])
        return shares

    def scores(self, texts: torch.Tensor) -> torch.Tensor:
        """`[B, N, M]`: each neuron's effect as a part of the cosine score with unit texts `[M, D]`
        (`effect . text / |embedding|`), without building the effects."""
        return torch.einsum("blhpn,lhpnm->bnm", self.coefficients, self._text_values(texts)) / self._norm[:, None, None]

    def head_scores(self, texts: torch.Tensor, neurons: Sequence[int] | None = None) -> torch.Tensor:
        """`[B, n, L', H, M]`: each later head's share of the chosen neurons' (default: all) score parts."""
        values = self._text_values(texts)
        coefficients = self.coefficients
        if neurons is not None:
            chosen = torch.as_tensor(list(neurons), dtype=torch.long, device=coefficients.device)
            coefficients, values = coefficients[..., chosen], values[:, :, :, chosen]
        shares = torch.einsum("blhpn,lhpnm->bnlhm", coefficients, values)
        return shares / self._norm[:, None, None, None, None]

    def activation_map(self, neuron: int) -> torch.Tensor:
        """`[B, grid_h, grid_w]`: the neuron's activation at each patch (prefix tokens left out)."""
        return self.activations[:, self.prefix:, neuron].reshape(-1, *self.grid)

    @property
    def _norm(self) -> torch.Tensor:
        return self.embedding.norm(dim=-1)

    def _text_values(self, texts: torch.Tensor) -> torch.Tensor:
        """`[L', H, P, N, M]`: a neuron's unit write through each later head and channel, dotted with the texts."""
        texts = texts.to(self.folded)
        later, heads, width, _ = self.folded.shape
        channels = self.reads.shape[3]
        directions = torch.einsum("lhkd,md->lhkm", self.folded, texts).reshape(later, heads, channels, -1,
                                                                                   texts.shape[0])
        return torch.einsum("lhnk,lhpkm->lhpnm", self.write_values, directions)


def through_heads(coefficients: torch.Tensor, write_values: torch.Tensor, folded: torch.Tensor) -> torch.Tensor:
    """`[B, n, D]`: `sum_{l', h, p} coefficients[b, l', h, p, n] write_values[l', h, n] @ folded[l', h, p]`, one head
    at a time (never a `[B, n, L', H, D]` intermediate). coefficients `[B, L', H, P, n]`, write_values `[L', H, n,
    hd]`, folded `[L', H, P * hd, D]`."""
    batch, later, heads, _, count = coefficients.shape
    total = coefficients.new_zeros(batch, count, folded.shape[-1])
    for i in range(later):
        for h in range(heads):
            total += _through_one_head(coefficients[:, i, h], write_values[i, h], folded[i, h])
    return total


def _through_one_head(coefficients: torch.Tensor, write_values: torch.Tensor, folded: torch.Tensor) -> torch.Tensor:
    """`[B, n, D]` through one head: coefficients `[B, P, n]`, write_values `[n, hd]`, folded `[P * hd, D]`."""
    batch, channels, count = coefficients.shape
    values = torch.einsum("bpn,nk->bnpk", coefficients, write_values).reshape(batch, count, -1)
    return values @ folded


def write_values(model: ClipModel, layer: int) -> torch.Tensor:
    """`[L', H, N, hd]`: each neuron of MLP `layer` writing one unit, as every head of the later layers reads it
    into its values (the pre-attention norm's centring and scale, then the value map; its 1 / std is per image).
    Image-independent: made once per model and layer (`ClipModel.derived`)."""
    tower = model.tower

    def make() -> torch.Tensor:
        with torch.no_grad():
            writes = tower.mlp_writes(layer).float()  # [N, W]
            return torch.stack([torch.einsum("nw,hwk->hnk", writes, tower.value_maps(later).float())
                                for later in range(layer + 1, tower.layers)])

    return model.derived(("neuron write values", layer), make)


def mlp_layer(model: ClipModel, layer: int) -> int:
    """A layer index (negative from the end) of an MLP with later heads -> a non-negative index."""
    count = model.geometry.layers
    index = layer_index(layer, count, model.label)
    if index == count - 1:
        raise InterpretError(f"The MLP of the last layer ({index}) has no later heads, so no second-order effect; "
                             f"choose a layer from 0 to {count - 2}.")
    return index


@torch.no_grad()
def second_order_effects(model: ClipModel, images, layer: int) -> NeuronEffects:
    """The second-order effects of every neuron of MLP `layer` (negative: from the end) on `images` (a preprocessed
    batch `[B, 3, H, W]`, or PIL images / paths), through every head of the later layers; see `NeuronEffects` and
    the module's docstring. One forward pass, plus the attention rows the readout reads in the later layers."""
    layer = mlp_layer(model, layer)
    tower = model.tower
    batch = model.preprocess_images(images)
    x = tower.embed(batch)
    rows = tower.pool_weights(x.device).nonzero().flatten() if tower.fixed_pool else None  # the tokens read
    weighted, activations = [], None
    for index in range(tower.layers):
        q, k, v = tower.qkv(index, x)
        mixed = tower.attend(index, q, k, v)
        if index > layer:
            weights = tower.attention_weights(index, q if rows is None else q[:, :, rows], k)  # [B, H, R, T]
            scale = tower.out_scale(index, mixed)
            if scale is not None:
                weights = weights * (scale if rows is None else scale[:, rows])[:, None, :, None]
            weighted.append(weights * tower.value_inv_std(index, x)[:, None, None, :])
        x = x + tower.heads_output(index, mixed)
        if index == layer:
            activations = tower.mlp_neurons(index, x)
        x = x + tower.mlp(index, x)
    coefficients, _, _ = tower.readout_linearised(x)  # [B, P, T]
    if rows is not None:
        coefficients = coefficients[:, :, rows]
    reads = torch.stack([torch.einsum("bpr,bhrt->bhpt", coefficients, weights) for weights in weighted], dim=1)
    later = tuple(range(layer + 1, tower.layers))
    folded = model.folded_head_weights()[layer + 1:]
    return NeuronEffects(layer, later, activations.float(), reads.float(), write_values(model, layer), folded,
                         tower.embedding(x).float(), model.geometry.grid, model.geometry.prefix)


# --- over a set of images: each neuron's direction, top images and significance ---------------------------------

TOP_IMAGES = 100  # the paper's: a neuron's direction is fitted on its 100 images of largest centred effect
NEURONS_FOLDER = "neurons"  # in a model's folder: neurons/layer-<l>/
NEURON_FILE, NEURON_MANIFEST = "neurons.safetensors", "neurons.json"


@dataclass(frozen=True)
class NeuronTask:
    """An engine task (`engines`): each image's coefficients of MLP `layer`'s neurons, `[n, N, K]` float32 (K =
    later layers x heads x readout channels, in `NeuronEffects.coefficients`' order)."""

    layer: int

    def __call__(self, model: ClipModel, batches, skipped):
        rows, coefficients = [], []
        for names, pictures in batches:
            checkpoint()
            effects = second_order_effects(model, pictures.to(model.device), self.layer)
            coefficients.append(flat_coefficients(effects).cpu().numpy())
            rows += names
        empty = np.zeros((0, model.tower.mlp_writes(self.layer).shape[0], 0), np.float32)
        return Block(rows, {"coefficients": np.concatenate(coefficients) if coefficients else empty}, list(skipped))


def flat_coefficients(effects: NeuronEffects) -> torch.Tensor:
    """`[B, N, K]`: `effects.coefficients` with the later heads and channels side by side, per neuron."""
    return effects.coefficients.permute(0, 4, 1, 2, 3).flatten(2)


def unit_effects(model: ClipModel, layer: int, neurons: Sequence[int] | slice) -> torch.Tensor:
    """`[n, K, D]`: each chosen neuron's effect per unit coefficient, through every later head and readout channel
    (the rows `flat_coefficients` weighs)."""
    values = write_values(model, layer)[:, :, neurons]  # [L', H, n, hd]
    folded = model.folded_head_weights()[layer + 1:]  # [L', H, P * hd, D]
    later, heads, count, head_dim = values.shape
    folded = folded.reshape(later, heads, -1, head_dim, folded.shape[-1])  # [L', H, P, hd, D]
    return torch.einsum("lhnk,lhpkd->nlhpd", values, folded).flatten(1, 3)


@dataclass
class NeuronDirections:
    """What MLP `layer`'s N neurons do over a set of `count` images (the paper's protocol, see `neuron_directions`).

    directions: `[N, D]` each neuron's first principal direction of its centred effects on its top images (unit;
        signed so that most of them point along it); mean_effects `[N, D]` its mean effect over the set;
    thresholds: `[N]` the smallest centred effect norm among its top images: an image whose effect exceeds it
        is *significant* for the neuron (`significant`); variance `[N]`: the share of its top images' centred
        effects that the direction explains;
    top_rows: `[N, top]` its top images (rows of `names`, largest first), top_norms `[N, top]` their norms;
    names: the images (relative to `root`); descriptions: per neuron (text, weight) pairs from a text bank, with
        `labels` (property, confidence) per neuron, once described (`describe_neurons`)."""

    model: str
    layer: int
    directions: torch.Tensor
    mean_effects: torch.Tensor
    thresholds: torch.Tensor
    variance: torch.Tensor
    top_rows: torch.Tensor
    top_norms: torch.Tensor
    names: list[str]
    root: str
    weights_sha256: str = ""
    descriptions: list[list[tuple[str, float]]] | None = None
    labels: list[tuple[str, float]] | None = None
    bank: str = ""

    @property
    def count(self) -> int:
        return len(self.names)

    def significant(self, effects: NeuronEffects) -> torch.Tensor:
        """`[B, N]` bool: whether each neuron's centred effect on each image exceeds its threshold."""
        centred = effects.effects - self.mean_effects.to(effects.effects)
        return centred.norm(dim=-1) > self.thresholds.to(centred)

    def save(self, folder) -> Path:
        """Write `folder/neurons.safetensors` and `neurons.json` (each to a temporary name, then renamed)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: getattr(self, name).contiguous() for name in
                   ("directions", "mean_effects", "thresholds", "variance", "top_rows", "top_norms")}
        temporary = folder / f"{NEURON_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        save_file(tensors, str(temporary))
        os.replace(temporary, folder / NEURON_FILE)
        write_json_atomic(folder / NEURON_MANIFEST, {
            "model": self.model, "layer": self.layer, "weights_sha256": self.weights_sha256, "count": self.count,
            "top": self.top_rows.shape[1], "root": self.root, "names": self.names, "bank": self.bank,
            "descriptions": self.descriptions, "labels": self.labels})
        return folder

    @classmethod
    def load(cls, folder, model: ClipModel | None = None) -> "NeuronDirections":
        """Read what `save` wrote; with `model`, refused (InterpretError) when it was made with other weights."""
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            manifest = json.loads((folder / NEURON_MANIFEST).read_text())
            tensors = load_file(str(folder / NEURON_FILE))
        except (OSError, ValueError) as error:
            raise InterpretError(f"No neuron directions in {folder} ({error}).") from None
        if model is not None and manifest.get("weights_sha256") != model.weights_hash:
            raise InterpretError(f"The neuron directions in {folder} were made with other weights than "
                                 f"{model.label}'s; compute them again (python -m interpret neurons directions).")
        descriptions = manifest.get("descriptions")
        return cls(manifest["model"], manifest["layer"], names=manifest["names"], root=manifest["root"],
                   weights_sha256=manifest.get("weights_sha256", ""), bank=manifest.get("bank", ""),
                   descriptions=[[tuple(pair) for pair in neuron] for neuron in descriptions]
                   if descriptions else None,
                   labels=[tuple(label) for label in manifest["labels"]] if manifest.get("labels") else None,
                   **tensors)


def neurons_folder(folder, layer: int) -> Path:
    """Where a model folder (`indexes/<slug>`, a bundle) keeps MLP `layer`'s neuron directions."""
    return Path(folder) / NEURONS_FOLDER / f"layer-{layer:02d}"


class _RunningTop:
    """Each neuron's `top` largest values seen so far, with their rows and a vector each `[K]` (streaming: memory
    `N x top x K`, whatever the number of images)."""

    def __init__(self, neurons: int, top: int, width: int):
        self.top = top
        self.values = torch.empty(neurons, 0)
        self.rows = torch.empty(neurons, 0, dtype=torch.long)
        self.vectors = torch.empty(neurons, 0, width)

    def add(self, values: torch.Tensor, vectors: torch.Tensor, first_row: int) -> None:
        """values `[b, N]`, vectors `[b, N, K]` of rows first_row .. first_row + b - 1."""
        count = values.shape[0]
        values = torch.cat([self.values, values.T], dim=1)
        rows = torch.cat([self.rows, torch.arange(first_row, first_row + count).expand(values.shape[0], -1)], dim=1)
        vectors = torch.cat([self.vectors, vectors.transpose(0, 1)], dim=1)
        best = values.topk(min(self.top, values.shape[1]), dim=1).indices  # largest first
        self.values, self.rows = values.gather(1, best), rows.gather(1, best)
        self.vectors = vectors.gather(1, best[..., None].expand(-1, -1, vectors.shape[2]))


NEURON_CHUNK = 256  # neurons whose unit effects `[n, K, D]` are made at once


def neuron_directions(model: ClipModel, images, layer: int, top: int = TOP_IMAGES, batch_size: int = 16,
                      block_size: int = 256, engine=None, progress: bool = True) -> NeuronDirections:
    """Each neuron of MLP `layer` over the images below the folder `images` (recursively): its direction, mean
    effect, significance threshold and top images (`NeuronDirections`), as the paper: effects centred by their
    mean over the images, the `top` of largest centred norm, their first singular vector, signed by majority.

    Two streaming passes over the images (`engine`: `engines.make_engine`, the local one by default; Ray runs the
    same task), and nothing of size `[images x N x D]`: pass 1 sums each neuron's coefficients (`NeuronTask`), whose
    mean gives the mean effect; pass 2 takes each image's centred coefficients d to the norm of its centred effect
    through each neuron's Gram matrix (`|d U_n|^2 = d (U_n U_n^T) d`, U_n its `unit_effects` `[K, D]`), and keeps
    the top images' d. The directions come from the top images' effects, `d U_n`. Memory: N x (top + K) x K
    floats, whatever the number of images (ViT-B-32's layer 9: 40 MB)."""
    layer = mlp_layer(model, layer)
    root = Path(images).resolve()
    names = [path.relative_to(root).as_posix() for path in list_images(root)]
    engine = engine or LocalEngine()
    task = NeuronTask(layer)

    def passes(description: str):
        return run_blocks(engine, model, root, names, task, batch_size, block_size, progress=progress,
                          description=description)

    total, seen = None, 0
    for block in passes(f"neurons of layer {layer}: mean effects (pass 1 of 2)"):
        coefficients = torch.from_numpy(block.arrays["coefficients"]).double()
        if len(block.rows):
            total = coefficients.sum(dim=0) if total is None else total + coefficients.sum(dim=0)
            seen += len(block.rows)
    if not seen:
        raise InterpretError(f"None of the images below {root} could be read.")
    mean = (total / seen).float()  # [N, K]
    neurons, width = mean.shape
    grams = torch.cat([_grams(unit_effects(model, layer, slice(start, start + NEURON_CHUNK)).cpu())
                       for start in range(0, neurons, NEURON_CHUNK)])  # [N, K, K]
    running, kept = _RunningTop(neurons, top, width), []
    for block in passes(f"neurons of layer {layer}: top images (pass 2 of 2)"):
        if not len(block.rows):
            continue
        centred = torch.from_numpy(block.arrays["coefficients"]) - mean  # [b, N, K]
        norms = torch.einsum("bnk,nkj,bnj->bn", centred, grams, centred).clamp(min=0).sqrt()
        running.add(norms, centred, len(kept))
        kept += block.rows
    directions, mean_effects, variance = [], [], []
    for start in range(0, neurons, NEURON_CHUNK):
        chosen = slice(start, start + NEURON_CHUNK)
        units = unit_effects(model, layer, chosen).cpu()  # [n, K, D]
        mean_effects.append(torch.einsum("nk,nkd->nd", mean[chosen], units))
        found, explained = _principal_directions(torch.einsum("ntk,nkd->ntd", running.vectors[chosen], units))
        directions.append(found)
        variance.append(explained)
    return NeuronDirections(model.label, layer, torch.cat(directions), torch.cat(mean_effects),
                            running.values[:, -1].clone(), torch.cat(variance), running.rows, running.values,
                            kept, str(root), model.weights_hash)


def _grams(units: torch.Tensor) -> torch.Tensor:
    """`[n, K, K]`: each neuron's Gram matrix of its unit effects `[n, K, D]`."""
    return units @ units.transpose(1, 2)


def _principal_directions(effects: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(`[n, D]` the first right singular vector of each neuron's centred top effects `[n, t, D]`, signed so that
    most of them project positively on it; `[n]` the share of their squared norm it explains)."""
    _, singular, vh = torch.linalg.svd(effects, full_matrices=False)
    direction = vh[:, 0]
    positive = (torch.einsum("ntd,nd->nt", effects, direction) > 0).sum(dim=1)
    direction = torch.where((positive > effects.shape[1] // 2)[:, None], direction, -direction)
    explained = singular[:, 0] ** 2 / (singular ** 2).sum(dim=1).clamp(min=1e-30)
    return direction, explained


# --- describing a neuron with text: a sparse decomposition of its direction over a bank ---------------------------

OMP_COMPONENTS = 32  # texts per neuron: the default of the authors' compute_sparse_decomposition.py (their README
# runs 128 with 30,000 words); at most the bank's size and the joint space's width
SHOWN_DESCRIPTIONS = 10  # of each neuron's texts, the largest first, kept with its directions


def sparse_code(targets: torch.Tensor, atoms: torch.Tensor, components: int, chunk: int = 256) -> torch.Tensor:
    """Orthogonal matching pursuit, batched: `[n, M]` coefficients over unit `atoms` `[M, D]` of at most
    `components` nonzeros (and at most half the atoms: a fit over most of a small bank is not sparse, and its
    nearly dependent texts take large weights of opposite signs) that approximate each of `targets` `[n, D]`. Each
    step picks the atom most correlated with what is left and refits the chosen atoms by least squares (through
    the atoms' Gram matrix: Rubinstein, Zibulevsky and Elad's Batch-OMP, so that no step multiplies by the atoms
    again)."""
    atoms, targets = atoms.double(), targets.double()
    components = max(1, min(components, atoms.shape[0] // 2, atoms.shape[1]))
    gram = atoms @ atoms.T  # [M, M]
    coded = torch.zeros(targets.shape[0], atoms.shape[0], dtype=torch.float64)
    for start in range(0, targets.shape[0], chunk):
        initial = targets[start:start + chunk] @ atoms.T  # [n, M]: each atom's correlation with the target
        count = initial.shape[0]
        support = torch.empty(count, 0, dtype=torch.long)
        correlations = initial.clone()
        weights = torch.empty(count, 0, dtype=torch.float64)
        for _ in range(components):
            scores = correlations.abs()
            scores.scatter_(1, support, -1.0)  # an atom is chosen once
            support = torch.cat([support, scores.argmax(dim=1, keepdim=True)], dim=1)
            chosen = gram[support[:, :, None], support[:, None, :]]  # [n, s, s]
            # least squares on the chosen atoms, the minimum-norm solution where they are dependent (a bank's
            # centred texts sum to zero: all of a small bank's are)
            weights = (torch.linalg.pinv(chosen, hermitian=True) @ initial.gather(1, support)[..., None])[..., 0]
            correlations = initial - torch.einsum("ns,nsm->nm", weights, gram[support])
        coded[start:start + count].scatter_(1, support, weights)
    return coded.float()


def describe_neurons(model: ClipModel, directions: NeuronDirections, bank, components: int = OMP_COMPONENTS,
                     shown: int = SHOWN_DESCRIPTIONS) -> NeuronDirections:
    """Each neuron's direction decomposed over the texts of `bank` (`banks.TextBank`) with `sparse_code` (the
    texts' embeddings centred on their mean and each scaled to unit length, as atoms), as (text, weight) pairs,
    the largest first (`shown` of them), and a property label as heads have: the tag whose texts carry the largest
    share of the squared positive weights (the texts the neuron writes towards), with that share as confidence
    (untagged texts do not vote). Returns `directions` with `descriptions`, `labels` and `bank` set."""
    texts = model.encode_texts(list(bank.texts)).float().cpu()
    atoms = texts - texts.mean(dim=0)
    atoms = atoms / atoms.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    coded = sparse_code(directions.directions.float().cpu(), atoms, components)  # [N, M]
    descriptions, labels = [], []
    for weights in coded:
        order = weights.abs().argsort(descending=True)
        kept = [int(i) for i in order[:shown] if weights[i] != 0]
        descriptions.append([(bank.texts[i], round(float(weights[i]), 5)) for i in kept])
        votes: dict[str, float] = {}
        for i in torch.nonzero(weights > 0).flatten().tolist():
            if bank.tags[i] != "untagged":
                votes[bank.tags[i]] = votes.get(bank.tags[i], 0.0) + float(weights[i]) ** 2
        best = max(votes, key=votes.get) if votes else "untagged"
        total = sum(votes.values())
        labels.append((best, round(votes.get(best, 0.0) / total, 4) if total > 0 else 0.0))
    directions.descriptions, directions.labels, directions.bank = descriptions, labels, bank.name
    return directions


# --- a model's stored directions ---------------------------------------------------------------------------------

def default_neuron_layers(model: ClipModel) -> list[int]:
    """The MLP layers the app and the segmentation method read by default: the three before the last (the paper's
    8, 9 and 10 of ViT-B-32's 12), as many as a smaller tower has."""
    count = model.geometry.layers
    return list(range(max(0, count - 4), count - 1))


DIRECTIONS_KEPT = 8  # layers' neuron directions kept loaded (a visitor's own come and go: the least recently used goes)
_stored = LoadedFiles(DIRECTIONS_KEPT)  # by their neurons.json
_toy_lock = threading.Lock()  # a toy model's directions are computed once


def stored_directions(model: ClipModel, layer: int, progress: bool = False, folder: str | Path | None = None
                      ) -> NeuronDirections:
    """MLP `layer`'s neuron directions from the model's folder (`indexes/<slug>`, or its bundle: see
    `folders.model_folder`; or the model folder `folder`, a visitor's database), read once and kept while their
    file stays the same. For the toy models they are computed over the toy database's scenes on first use and
    described with the toy bank (seconds); for any other model without them, InterpretError says how to compute
    them."""
    from .banks import toy_bank
    from .folders import model_folder
    from .paths import is_toy
    from .toy.examples import draw_toy_database

    layer = mlp_layer(model, layer)
    with _toy_lock:
        own = folder is None
        folder = neurons_folder(model_folder(model) if own else Path(folder), layer)
        manifest = folder / NEURON_MANIFEST
        if not manifest.is_file() and own and is_toy(model.name):
            images = draw_toy_database(model.index_dir / "images")
            describe_neurons(model, neuron_directions(model, images, layer, progress=progress), toy_bank()).save(
                neurons_folder(model.index_dir, layer))
            folder = neurons_folder(model.index_dir, layer)
            manifest = folder / NEURON_MANIFEST
        if not manifest.is_file():
            raise InterpretError(f"No neuron directions of layer {layer} for {model.label} here yet. Compute them "
                                 f"once from your images: python -m interpret neurons directions --model "
                                 f"{model.name}{' --pretrained ' + model.pretrained if model.pretrained else ''} "
                                 f"--layer {layer} --images DIR (or use a bundle that has them; in the app, the "
                                 "Build a database tab finds them in a zip of your images, for your session).")
    return _stored.get(manifest, lambda: NeuronDirections.load(folder, model))


def has_directions(model: ClipModel, layers: Sequence[int]) -> bool:
    """Whether `stored_directions` can give every one of `layers` (the toy models' are computed on first use)."""
    from .folders import model_folder
    from .paths import is_toy

    if is_toy(model.name):
        return True
    folder = model_folder(model)
    return all((neurons_folder(folder, mlp_layer(model, layer)) / NEURON_MANIFEST).is_file() for layer in layers)


@torch.no_grad()
def neuron_activations(model: ClipModel, images, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """`{layer: [B, T, N]}`: the neurons of the MLPs of `layers` at every token (`VisionTower.mlp_neurons`), from one
    forward pass."""
    tower = model.tower
    wanted = {layer_index(layer, tower.layers, model.label) for layer in layers}
    x = tower.embed(model.preprocess_images(images))
    found = {}
    for index in range(max(wanted) + 1):
        x = x + tower.heads_output(index, tower.attend(index, *tower.qkv(index, x)))
        if index in wanted:
            found[index] = tower.mlp_neurons(index, x).float()
        x = x + tower.mlp(index, x)
    return found


# --- one image and caption: the neurons that move the score -------------------------------------------------------

def default_neuron_layer(model: ClipModel) -> int:
    """The MLP the Neurons tab and `explain_neurons` read unless told: the third layer from the end (the paper's
    layer 9 of ViT-B-32's 12), or the first of a tower of fewer than four."""
    return max(0, model.geometry.layers - 3)


@dataclass
class NeuronReport:
    """Why one image matches one caption, below the heads: the neurons of MLP `layer` whose second-order effects
    (through the later heads) move the cosine score most, either way.

    neurons `[k]`, contributions `[k]` their parts of the cosine score (largest magnitude first); total: every
    neuron's part together; head_shares `[k, L', H]` each later head's share of each neuron's part (`later`: those
    layers); maps `[k, grid_h, grid_w]` each neuron's activation at each patch; descriptions and labels (one per
    neuron, from the model's stored directions; None without them); significant `[k]` whether the image is
    significant for the neuron (its centred effect beyond the neuron's threshold; None without directions)."""

    layer: int
    caption: str
    cosine: float
    neurons: list[int]
    contributions: torch.Tensor
    total: float
    head_shares: torch.Tensor
    later: tuple[int, ...]
    maps: torch.Tensor
    descriptions: list[list[tuple[str, float]]] | None
    labels: list[tuple[str, float]] | None
    significant: list[bool] | None
    warnings: list[str]

    def carriers(self, position: int, count: int = 3) -> list[tuple[int, int, float]]:
        """The later heads (layer, head, share of the score) that carry the `position`-th neuron's part most."""
        shares = self.head_shares[position]
        order = shares.abs().flatten().argsort(descending=True)[:count]
        heads = shares.shape[1]
        return [(self.later[int(i) // heads], int(i) % heads, float(shares.flatten()[i])) for i in order]


def explain_neurons(model: ClipModel, image, caption: str, layer: int | None = None, top: int = 10,
                    directions: NeuronDirections | None = None) -> NeuronReport:
    """The `top` neurons of MLP `layer` (default `default_neuron_layer`) that move the image-caption cosine score
    most through the later heads; `directions` (default: the model's stored ones, when it has them) names them."""
    from .images import load_image

    layer = mlp_layer(model, default_neuron_layer(model) if layer is None else layer)
    encoded = model.tokenize(caption)
    text = model.embed_tokens(encoded)  # [1, D]
    effects = second_order_effects(model, [load_image(image)], layer)
    parts = effects.scores(text)[0, :, 0]  # [N]
    chosen = parts.abs().argsort(descending=True)[:top].tolist()
    if directions is None:
        try:
            directions = stored_directions(model, layer)
        except InterpretError:
            directions = None
    significant = None
    if directions is not None:
        significant = directions.significant(effects)[0, chosen].tolist()
    cosine = float(torch.nn.functional.normalize(effects.embedding, dim=-1)[0] @ text[0].to(effects.embedding))
    return NeuronReport(
        layer=layer, caption=encoded.kept[0], cosine=cosine, neurons=chosen, contributions=parts[chosen].cpu(),
        total=float(parts.sum()), head_shares=effects.head_scores(text, chosen)[0, :, :, :, 0].cpu(),
        later=effects.later, maps=torch.stack([effects.activation_map(n)[0] for n in chosen]).cpu(),
        descriptions=[directions.descriptions[n] for n in chosen] if directions and directions.descriptions else None,
        labels=[directions.labels[n] for n in chosen] if directions and directions.labels else None,
        significant=significant, warnings=encoded.warnings())


# --- removing neurons in the forward pass -------------------------------------------------------------------------

@torch.no_grad()
def neuron_means(model: ClipModel, images, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """`{layer: [T, N]}`: the MLPs' neurons averaged over `images` at each token (what mean-ablation puts back)."""
    return {layer: activations.mean(dim=0) for layer, activations in neuron_activations(model, images, layers).items()}


@torch.no_grad()
def ablated_neuron_embeddings(model: ClipModel, images, neurons: dict[int, Sequence[int]],
                              means: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """`[B, D]` image embeddings (not normalised) of a forward pass in which the chosen neurons (`{layer: neurons}`)
    write nothing, or, with `means` (`neuron_means`), their mean activation (later layers see the change)."""
    tower = model.tower
    chosen = {layer_index(layer, tower.layers, model.label): torch.as_tensor(list(picked), dtype=torch.long)
              for layer, picked in neurons.items()}
    x = tower.embed(model.preprocess_images(images))
    for index in range(tower.layers):
        x = x + tower.heads_output(index, tower.attend(index, *tower.qkv(index, x)))
        if index in chosen:
            activations = tower.mlp_neurons(index, x).clone()
            activations[..., chosen[index]] = 0 if means is None else means[index][:, chosen[index]].to(activations)
            x = x + activations @ tower.mlp_writes(index).to(activations) + tower.mlp_bias(index).to(activations)
        else:
            x = x + tower.mlp(index, x)
    return tower.embedding(x)
