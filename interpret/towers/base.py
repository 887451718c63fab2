"""The seam's core: `VisionTower` (what every family says about its image tower), the registry of families
(`register`, `FAMILIES`, `tower_of`) and the helpers the families share."""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from ..errors import InterpretError, ModelLoadError

FAMILIES: list[type["VisionTower"]] = []  # every registered family, in the order `tower_of` tries them


def register(family: type["VisionTower"]) -> type["VisionTower"]:
    """Class decorator: add a family to `FAMILIES`."""
    FAMILIES.append(family)
    return family


def tower_of(visual: torch.nn.Module, name: str) -> "VisionTower":
    """The registered family's view of `visual`; a message naming why each family refused it otherwise."""
    reasons = []
    for family in FAMILIES:
        reason = family.refuses(visual)
        if reason is None:
            return family(visual)
        reasons.append(f"{family.name}: {reason}")
    raise ModelLoadError(f"{name}: no model family here can read its image tower ({type(visual).__name__}). "
                         + " ".join(reasons))


class VisionTower:
    """An image tower as the analyses see it. Shapes: B images, T tokens (`prefix` tokens, then the patches in
    rows), W = width, H heads of `head_dim`, D = embed_dim."""

    name: ClassVar[str]
    description: ClassVar[str]  # a line for the README's support table
    caveat: ClassVar[str] = ""  # what does not work yet on this family's models, for the same table
    # True: the readout pools the tokens with fixed weights, then norms and projects (`pool_weights`,
    # `readout_norm`, `projection`); False: it is linearised at each input (`readout_linearised`), as an attention
    # pooler's is. A class default: a family whose models differ sets it per instance (the timm ones do).
    fixed_pool: bool = True

    layers: int
    heads: int
    width: int
    head_dim: int
    embed_dim: int
    grid: tuple[int, int]
    patch_size: tuple[int, int]
    image_size: tuple[int, int]
    prefix: int  # tokens before the patches (class token, registers)

    @classmethod
    def refuses(cls, visual: torch.nn.Module) -> str | None:
        """Why this family cannot read `visual` (None: it can)."""
        raise NotImplementedError

    @property
    def tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]

    @property
    def readout_channels(self) -> int:
        """How many ways the readout reads the stream (1; an attention pooler: one per pooling head)."""
        return 1

    @property
    def value_width(self) -> int:
        """The width of a head's pooled values in the decomposition: head_dim per readout channel."""
        return self.head_dim * self.readout_channels

    @property
    def read_token(self) -> int | None:
        """The one token the readout reads (the class token), or None when it reads several."""
        if not self.fixed_pool:
            return None
        chosen = self.pool_weights().nonzero().flatten()
        return int(chosen[0]) if len(chosen) == 1 else None

    # --- the forward pass, piece by piece -------------------------------------------------------------------
    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """`[B, 3, H, W]` -> the residual stream entering block 0, `[B, T, W]`."""
        raise NotImplementedError

    def qkv(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block `layer`'s queries, keys and values for the stream `x` `[B, T, W]`: each `[B, H, T, head_dim]`,
        with everything the family applies before the dot products (norms, rotary embeddings). It must act on
        each token separately (the interaction tangents rely on it)."""
        raise NotImplementedError

    def attention_scale(self, layer: int) -> float:
        return self.head_dim ** -0.5

    def out_maps(self, layer: int) -> torch.Tensor:
        """`[H, head_dim, W]`: each head's output map into the residual stream, LayerScale included (and, where
        a norm sits between the heads and the projection, its centring and scale: see `out_scale`)."""
        raise NotImplementedError

    def out_scale(self, layer: int, mixed: torch.Tensor) -> torch.Tensor | None:
        """`[B, T]`: where a norm sits between the heads and the output projection (EVA's sub-LN), 1 / its
        standard deviation at each token (the linearisation point: the heads' parts at a token are their
        values through `out_maps`, times this); None where there is no such norm."""
        return None

    def out_bias(self, layer: int) -> torch.Tensor:
        """`[W]`: the attention output's bias, LayerScale included (zeros when there is none)."""
        raise NotImplementedError

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Block `layer`'s MLP branch on the stream after attention, `[B, T, W]`, LayerScale included."""
        return self.mlp_from_input(layer, self.mlp_norm(layer)(x))

    def mlp_norm(self, layer: int) -> torch.nn.Module:
        """The norm block `layer`'s MLP reads the stream through (`ln_2`, `norm2`): its output is what the MLP reads
        (and what a transcoder of this MLP reads)."""
        raise NotImplementedError

    def mlp_from_input(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """`[B, T, W]`: what block `layer`'s MLP writes into the stream (LayerScale included) given what it reads,
        `z` = `mlp_norm(layer)(x)` `[B, T, W]`: the function a transcoder of this MLP stands in for."""
        raise NotImplementedError

    # --- below the heads: the MLPs' neurons, and how a change of the stream reaches a head's values ---------
    def mlp_parts(self, layer: int, x: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Block `layer`'s MLP as its neurons: (`mlp_neurons` at the stream after attention `x`, or None without it;
        `mlp_writes`; `mlp_bias`), from `neuron_parts`."""
        raise NotImplementedError

    def mlp_neurons(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, N]`: block `layer`'s MLP neurons at the stream after attention `x` `[B, T, W]`: the hidden units
        after the activation (SwiGLU: the gated units), divided by the standard deviation of a norm between them
        and the output map where there is one (its statistics fixed at this input, as everywhere): the values the
        MLP's output is linear in, `mlp(layer, x) == mlp_neurons(layer, x) @ mlp_writes(layer) + mlp_bias(layer)`."""
        return self.mlp_parts(layer, x)[0]

    def mlp_writes(self, layer: int) -> torch.Tensor:
        """`[N, W]`: what each neuron writes into the residual stream per unit of `mlp_neurons`: its row of the
        output map (after the inner norm's centring and scale, where there is one), LayerScale included."""
        return self.mlp_parts(layer)[1]

    def mlp_bias(self, layer: int) -> torch.Tensor:
        """`[W]`: what the MLP writes whatever its neurons (the output bias, and an inner norm's bias through the
        output map), LayerScale included."""
        return self.mlp_parts(layer)[2]

    def value_maps(self, layer: int) -> torch.Tensor:
        """`[H, W, head_dim]`: how a change of the stream at a token reaches each head's values there: the
        pre-attention norm's centring and scale, then the head's value map (the norm's 1 / std: `value_inv_std`)."""
        raise NotImplementedError

    def value_inv_std(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """`[B, T]`: 1 / the standard deviation of block `layer`'s pre-attention norm at each token of `x`."""
        raise NotImplementedError

    # --- the readout --------------------------------------------------------------------------------------
    def pool_weights(self, device=None) -> torch.Tensor:
        """`[T]`: the fixed weights the readout pools the tokens with (they sum to 1)."""
        raise NotImplementedError

    def class_token_or_patches(self, class_token: bool, device=None) -> torch.Tensor:
        """`[T]` pooling weights: one-hot at the class token, or the patches' average (prefix tokens left out)."""
        weights = torch.zeros(self.tokens, device=device)
        if class_token:
            weights[0] = 1
        else:
            weights[self.prefix:] = 1 / (self.tokens - self.prefix)
        return weights

    def readout_norm(self) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """(weight `[W]`, bias `[W]` or None, eps) of the norm after pooling (a LayerNorm)."""
        raise NotImplementedError

    def projection(self) -> torch.Tensor:
        """`[W, D]`."""
        raise NotImplementedError

    # --- built from the pieces: every family shares these -------------------------------------------------
    def projection_bias(self) -> torch.Tensor | None:
        """`[D]`: the projection's bias, or None."""
        return None

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """`[B, H, T, head_dim]`: each head's attention-weighted values."""
        return F.scaled_dot_product_attention(q, k, v, scale=self.attention_scale(layer))

    def attention_weights(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """`[B, H, Tq, T]`: the softmax weights of queries `q` over keys `k`."""
        return torch.softmax((q @ k.transpose(-1, -2)) * self.attention_scale(layer), dim=-1)

    def projection_input(self, layer: int, mixed: torch.Tensor) -> torch.Tensor:
        """`[B, H, T, head_dim]`: what each head hands the output projection (`mixed` itself, or after the norm
        between them): removing a head zeroes its slice here, as zeroing its columns of the projection does."""
        return mixed

    def heads_output(self, layer: int, mixed: torch.Tensor, removed: list[int] | None = None,
                     means: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, H, T, head_dim]` attention-weighted values -> the attention branch's output `[B, T, W]`; the
        heads in `removed` hand the projection zero (or their `means` `[H, T, head_dim]` of `projection_input`)."""
        raise NotImplementedError

    def block(self, layer: int, x: torch.Tensor, removed: list[int] | None = None,
              means: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One block on `x` `[B, T, W]`, with the heads in `removed` outputting zero (or their `means`
        `[H, T, head_dim]`): (the block's output, what every head hands the projection, before removal)."""
        mixed = self.attend(layer, *self.qkv(layer, x))
        x = x + self.heads_output(layer, mixed, removed, means)
        return x + self.mlp(layer, x), self.projection_input(layer, mixed)

    def forward(self, batch: torch.Tensor, blocks: int | None = None) -> torch.Tensor:
        """The stream after the first `blocks` blocks (default: all), `[B, T, W]`."""
        x = self.embed(batch)
        for layer in range(self.layers if blocks is None else blocks):
            x = self.block(layer, x)[0]
        return x

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, W]` -> `[B, W]`: the tokens pooled as the readout pools them."""
        return torch.einsum("btw,t->bw", x, self.pool_weights(x.device).to(x))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, W]` final stream -> `[B, D]` embedding (not normalised)."""
        return self.readout(self.pooled(x))

    def readout_mlp_part(self, x: torch.Tensor) -> torch.Tensor | None:
        """`[B, D]`: what the readout's own MLP (an attention pooler's: SigLIP's, PE-Core's) puts into the embedding
        at the final stream `x`, within `readout_linearised`'s rest; None where the readout has no MLP."""
        return None

    def readout_input(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, W]` final stream -> `[B, W]`: what the readout's last stage reads, one vector an image: the class
        token's (or the pooled) stream before the final norm; an attention pooler's output (its MLP included). A
        dictionary of the readout reads this (`embedding_from_readout_input` goes on from it)."""
        return self.pooled(x)

    def embedding_from_readout_input(self, readout_input: torch.Tensor) -> torch.Tensor:
        """`[B, W]` (`readout_input`) -> `[B, D]` embedding (not normalised)."""
        return self.readout(readout_input)

    def readout_linearised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The readout at the final stream `x` `[B, T, W]` as a linear map plus the rest: (coefficients
        `[B, P, T]`, maps `[P, W, D]`, rest `[B, D]`) with `embedding = sum_p sum_t c[b, p, t] x[b, t] @
        maps[p] + rest[b]` exactly (P = `readout_channels`). Pool-then-norm: c = pool / std, one map."""
        pooled = self.pooled(x)
        coefficients = self.pool_weights(x.device).to(x)[None, None] * self.readout_inv_std(pooled)[:, None, None]
        rest = self.readout_bias().to(x).expand(x.shape[0], -1)
        return coefficients, self.folded_readout().to(x)[None], rest

    def readout(self, pooled: torch.Tensor) -> torch.Tensor:
        """`[..., W]` pooled stream -> `[..., D]` embedding (not normalised)."""
        weight, bias, eps = self.readout_norm()
        embedding = F.layer_norm(pooled, pooled.shape[-1:], weight, bias, eps) @ self.projection()
        projection_bias = self.projection_bias()
        return embedding if projection_bias is None else embedding + projection_bias

    def readout_inv_std(self, pooled: torch.Tensor) -> torch.Tensor:
        """`[B]`: 1 / the norm's standard deviation at the pooled stream (the linearisation point)."""
        return torch.rsqrt(pooled.var(dim=-1, unbiased=False) + self.readout_norm()[2])

    @torch.no_grad()
    def folded_readout(self) -> torch.Tensor:
        """`[W, D]`: the norm after pooling linearised (centring and scale, without its 1 / std), then the
        projection: `C diag(gamma) proj`."""
        gamma = self.readout_norm()[0].detach().float()
        scaled = gamma[:, None] * self.projection().detach().float()
        return scaled - scaled.mean(dim=0, keepdim=True)

    @torch.no_grad()
    def folded_heads(self) -> torch.Tensor:
        """`[L, H, head_dim, D]`: each head's output map, LayerScale, the readout's centring and scale and the
        projection. A head's pooled weighted values times this, divided by the readout's std, are its part."""
        readout = self.folded_readout()
        return torch.stack([self.out_maps(layer).detach().float() @ readout for layer in range(self.layers)])

    def readout_bias(self) -> torch.Tensor:
        """`[D]`: the norm's bias through the projection, and the projection's bias."""
        _, bias, _ = self.readout_norm()
        projection = self.projection()
        total = bias @ projection if bias is not None else projection.new_zeros(projection.shape[1])
        projection_bias = self.projection_bias()
        return total if projection_bias is None else total + projection_bias


def side_by_side(mixed: torch.Tensor) -> torch.Tensor:
    """`[B, H, T, head_dim]` -> `[B, T, H * head_dim]`, the heads side by side as a projection reads them."""
    batch, heads, tokens, head_dim = mixed.shape
    return mixed.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _without_heads(handed: torch.Tensor, removed: list[int] | None, means: torch.Tensor | None) -> torch.Tensor:
    """`handed` `[B, H, T, head_dim]` with the heads in `removed` set to zero (or to their `means`)."""
    if not removed:
        return handed
    handed = handed.clone()
    handed[:, removed] = 0 if means is None else means[removed].to(handed)
    return handed


def layer_norm_inv_std(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`[..., T]`: 1 / the standard deviation a LayerNorm `norm` divides each row of `x` `[..., T, W]` by. Another
    norm (RMSNorm) has no centring: the neuron readers refuse it with a message."""
    if not isinstance(norm, torch.nn.LayerNorm):
        raise InterpretError(f"This tower's {type(norm).__name__} is not a LayerNorm; neurons are read through "
                             "LayerNorms only.")
    return torch.rsqrt(x.float().var(dim=-1, unbiased=False) + norm.eps).to(x)


def centred_input_maps(norm: torch.nn.LayerNorm, weight: torch.Tensor, heads: int) -> torch.Tensor:
    """`[heads, W, out / heads]`: a LayerNorm's centring and scale, then a Linear's `weight` `[out, W]` split into
    `heads` groups of rows: `C diag(gamma) W_g^T` for each group (statistics aside)."""
    scaled = norm.weight[None, :, None] * weight.reshape(heads, -1, weight.shape[1]).transpose(1, 2)
    return scaled - scaled.mean(dim=1, keepdim=True)


def neuron_parts(units: torch.Tensor | None, norm: torch.nn.Module, output: torch.nn.Linear,
                 layer_scale: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """An MLP's hidden `units` `[B, T, N]` (after the activation; None: the writes alone), an optional `norm` over
    them (a LayerNorm, or Identity) and its `output` map -> (neurons `[B, T, N]`, writes `[N, W]`, bias `[W]`) with
    `output(norm(units))` times `layer_scale` `== neurons @ writes + bias`: a LayerNorm's statistics fixed at this
    input, its 1 / std goes into the neurons and its centring and scale into the writes (see
    `VisionTower.mlp_neurons`)."""
    writes, bias = output.weight.T, output.bias if output.bias is not None else output.weight.new_zeros(
        output.weight.shape[0])
    if isinstance(norm, torch.nn.LayerNorm):
        units = None if units is None else units * layer_norm_inv_std(norm, units)[..., None]
        scaled = norm.weight[:, None] * writes
        writes = scaled - scaled.mean(dim=0, keepdim=True)
        if norm.bias is not None:
            bias = bias + norm.bias @ output.weight.T
    elif not isinstance(norm, torch.nn.Identity):
        raise InterpretError(f"An MLP with a {type(norm).__name__} inside is not read yet.")
    if layer_scale is not None:
        writes, bias = writes * layer_scale, bias * layer_scale
    return units, writes, bias


def _parameter(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    """A parameter of `module` by its name in the state dict ('attn.in_proj_weight'), or None."""
    try:
        return module.get_parameter(name)
    except AttributeError:
        return None


