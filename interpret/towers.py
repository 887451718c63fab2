"""The one seam between the analyses and a model family's image tower.

Every analysis (the decomposition, head removal, interaction tangents, mutual knowledge's keys) reads an image
tower only through `VisionTower`: how it embeds its tokens (and how many prefix tokens, class token or registers,
come before the patches), each block's attention pieces per head (queries, keys and values, each head's output
map into the residual stream with its LayerScale, the output bias), its MLP, and its readout. None of them reads
a family's modules. Adding a family is one subclass with `@register` (timm's `register_model`, TransformerLens's
architecture adapters): `FAMILIES` is the list every invariant test runs over (tests/test_towers.py).

Two kinds of readout. *Pool, then norm, then project* (`fixed_pool`): `embedding = norm(sum_t pool[t] x_L[t]) @
proj`, with fixed pooling weights over the tokens (the class token: one-hot at token 0; average pooling: 1 /
patches on every patch). With the norm's mean and standard deviation fixed at this input (as TextSpan fixes the
attention pattern and `ln_post`'s statistics), the embedding is exactly a sum of one part per (layer, head, source
token), per MLP, and a rest: a head's part from source token s is `(sum_t pool[t] a[t, s]) v[s]` through the
head's output map, the readout's centring, scale and projection (`folded_heads`). *An attention pooler*
(`LatentPooling`: SigLIP, SigLIP 2, PE-Core): its attention and the final norm's statistics fixed at this input,
the same holds with one coefficient per pooling head and token (`readout_linearised`), and the pooler's own MLP is
a part of its own. A norm between the heads and the output projection (EVA's sub-LN) is linearised per token
(`out_scale`).

Families: `OpenClipViT` (open_clip's VisionTransformer: class token, CLIPA's average), `TimmEva` (EVA-01/02,
PE-Core), `TimmViT` (SigLIP, SigLIP 2, class-token timm ViTs). CoCa's pooler, NaFlex and ResNets are refused
with a message (`tower_of`); `support_table()` is the README's table.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import ClassVar

import torch
import torch.nn.functional as F

from .errors import ModelLoadError

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


def _parameter(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    """A parameter of `module` by its name in the state dict ('attn.in_proj_weight'), or None."""
    try:
        return module.get_parameter(name)
    except AttributeError:
        return None


# --- open_clip's residual attention block, image or text tower: read by parameter name ---------------------------

def resblock_qkv(block: torch.nn.Module, x: torch.Tensor, heads: int) -> tuple[torch.Tensor, ...]:
    """An open_clip `ResidualAttentionBlock`'s queries, keys and values for `x` `[B, T, W]`, each
    `[B, heads, T, W / heads]`."""
    batch, tokens, width = x.shape
    qkv = F.linear(block.ln_1(x), _parameter(block, "attn.in_proj_weight"), _parameter(block, "attn.in_proj_bias"))
    q, k, v = qkv.view(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    return q, k, v


def resblock_output(block: torch.nn.Module, mixed: torch.Tensor, removed: list[int] | None = None,
                    means: torch.Tensor | None = None) -> torch.Tensor:
    """Its attention branch's output `[B, T, W]` from the heads' weighted values `[B, H, T, head_dim]` (the heads in
    `removed` zero, or their `means`), in one matrix product as open_clip does it, LayerScale included."""
    out = F.linear(side_by_side(_without_heads(mixed, removed, means)), _parameter(block, "attn.out_proj.weight"),
                   _parameter(block, "attn.out_proj.bias"))
    return block.ls_1(out)


def resblock_mlp(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Its MLP branch on the stream after attention, LayerScale included."""
    return block.ls_2(block.mlp(block.ln_2(x)))


class AttentionPooling:
    """What the attention-pooled readouts share: one readout channel per pooling head, and the heads folded
    through each channel's map (`_pool_maps`, `[P, W, D]`). A family mixes a subclass in and sets `pooler` (None:
    its fixed-pool readout is used instead)."""

    pooler: torch.nn.Module | None

    @property
    def readout_channels(self) -> int:
        return 1 if self.pooler is None else self.pool_heads

    def pool_parts(self, x: torch.Tensor) -> "PoolParts":
        """The pooler at the final stream `x` `[B, T, W]`: its query, keys, values and attention, in plain
        operations (forward AD; gradients with respect to the attention for the explanation methods)."""
        raise NotImplementedError

    def pooled_embedding(self, parts: "PoolParts") -> torch.Tensor:
        """`[B, D]`: the embedding from the pooler's attention and values."""
        return self.embedding_from_mixed(parts.mixed)

    def embedding_from_mixed(self, mixed: torch.Tensor) -> torch.Tensor:
        """`[B, D]`: the embedding from each pooling head's attention-weighted values `[B, P, hd]` (the rest of
        the pooler, then the readout)."""
        raise NotImplementedError

    def embedding(self, x):
        if self.pooler is None:
            return super().embedding(x)
        return self.pooled_embedding(self.pool_parts(x))

    @property
    def pool_heads(self) -> int:
        raise NotImplementedError

    def _pool_maps(self) -> torch.Tensor:
        """`[P, W, D]`: how a token's state reaches the embedding through each pooling head (attention and norm
        statistics aside: those are `readout_linearised`'s coefficients)."""
        raise NotImplementedError

    @torch.no_grad()
    def folded_heads(self):
        if self.pooler is None:
            return super().folded_heads()
        maps = self._pool_maps()
        folded = [torch.einsum("hkw,pwd->hpkd", self.out_maps(layer).float(), maps.float())
                  for layer in range(self.layers)]
        return torch.stack(folded).flatten(2, 3)  # [L, H, P * hd, D]: a head's values per pooling head


@dataclass
class PoolParts:
    """An attention pooler's pieces at one input: `query` `[P, hd]` (its one query that the embedding reads),
    `keys` and `values` `[B, T, P, hd]`, `attention` `[B, P, T]` (P pooling heads, T tokens)."""

    query: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    attention: torch.Tensor

    @property
    def mixed(self) -> torch.Tensor:
        """`[B, P, hd]`: each pooling head's attention-weighted values."""
        return torch.einsum("bpt,btpk->bpk", self.attention, self.values)


def _attended(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> PoolParts:
    """`PoolParts` with the softmax attention of `query` `[P, hd]` over `keys` `[B, T, P, hd]`."""
    attention = torch.softmax(torch.einsum("pk,btpk->bpt", query, keys) * scale, dim=-1)
    return PoolParts(query, keys, values, attention)


def _centred_values(norm: torch.nn.LayerNorm, value_weight: torch.Tensor, heads: int) -> torch.Tensor:
    """`[P, W, hd]`: a norm's centring and scale, then each pooling head's value map: `C diag(gamma) W_v,p^T`
    (`value_weight` `[P * hd, W]`, as a Linear keeps it)."""
    scaled = norm.weight[None, :, None] * value_weight.reshape(heads, -1, value_weight.shape[1]).transpose(1, 2)
    return scaled - scaled.mean(dim=1, keepdim=True)


class CocaPooling(AttentionPooling):
    """open_clip's CoCa readout (`AttentionalPooler`, its original setup): learned queries attend over the final
    stream after a norm (`ln_k`), then `ln_post`; the first query's output, projected, is the embedding (the
    other queries feed the captioning decoder). Linearised at the input as the latent poolers are: the first
    query's attention, `ln_k`'s statistics at each token and `ln_post`'s at the pooled output fixed, a part at token
    t reaches the embedding through pooling head p with the coefficient a_p[t] / (std_t std_post) and the map
    `C diag(gamma_k) W_v,p^T W_out,p^T C diag(gamma_post) proj`; the biases are in the rest (it has no MLP)."""

    @staticmethod
    def pooler_refuses(visual: torch.nn.Module) -> str | None:
        if getattr(visual, "attn_pool_contrastive", None) is not None:
            return "its attention poolers are the 'parallel' or 'cascade' kind (open_clip marks them untested)"
        if visual.pool_type != "tok" or type(visual.attn_pool).__name__ != "AttentionalPooler":
            return f"its attention pooler is read out with '{visual.pool_type}', not at its first query"
        return None

    @property
    def pool_heads(self) -> int:
        return int(self.pooler.attn.num_heads)

    def _pool_projections(self) -> tuple[torch.Tensor, ...]:
        """The pooler's query, key and value maps (`[d, d]`, `[d, W]`, `[d, W]`, as a Linear keeps them) and biases."""
        attention = self.pooler.attn
        joint = _parameter(attention, "in_proj_weight")
        if joint is not None:
            weights = joint.chunk(3)
        else:
            weights = tuple(_parameter(attention, f"{part}_proj_weight") for part in "qkv")
        bias = _parameter(attention, "in_proj_bias")
        biases = bias.chunk(3) if bias is not None else tuple(w.new_zeros(w.shape[0]) for w in weights)
        return (*weights, *biases)

    def pool_parts(self, x):
        pooler = self.pooler
        query_weight, key_weight, value_weight, query_bias, key_bias, value_bias = self._pool_projections()
        batch, tokens, _ = x.shape
        channels = self.pool_heads
        normed = pooler.ln_k(x)
        query = (pooler.ln_q(pooler.query[:1]) @ query_weight.T + query_bias).reshape(channels, -1)  # [P, hd]
        keys = (normed @ key_weight.T + key_bias).reshape(batch, tokens, channels, -1)
        values = (normed @ value_weight.T + value_bias).reshape(batch, tokens, channels, -1)
        return _attended(query, keys, values, query.shape[-1] ** -0.5)

    def _pool_output(self, parts: PoolParts) -> torch.Tensor:
        """`[B, d]`: the first query's output, before `ln_post`."""
        return self.pooler.attn.out_proj(parts.mixed.flatten(1))

    def embedding_from_mixed(self, mixed):
        return self.readout(self.pooler.attn.out_proj(mixed.flatten(1)))

    def readout_linearised(self, x):
        if self.pooler is None:
            return super().readout_linearised(x)
        pooler = self.pooler
        parts = self.pool_parts(x)
        post_inv_std = self.readout_inv_std(self._pool_output(parts))  # [B]
        inv_std = torch.rsqrt(x.var(dim=-1, unbiased=False) + pooler.ln_k.eps)  # [B, T]
        coefficients = parts.attention * inv_std[:, None, :] * post_inv_std[:, None, None]
        _, _, value_weight, _, _, value_bias = self._pool_projections()
        if pooler.ln_k.bias is not None:
            value_bias = value_bias + pooler.ln_k.bias @ value_weight.T
        constant = pooler.attn.out_proj(value_bias[None])[0]  # the biases' pooled value (sum_t a = 1)
        rest = post_inv_std[:, None] * (constant @ self.folded_readout().to(x)) + self.readout_bias().to(x)
        return coefficients, self._pool_maps(), rest

    def _pool_maps(self) -> torch.Tensor:
        attention = self.pooler.attn
        out_weight = attention.out_proj.weight.T.reshape(self.pool_heads, -1, attention.embed_dim)  # [P, hd, d]
        values = _centred_values(self.pooler.ln_k, self._pool_projections()[2], self.pool_heads)  # [P, W, hd]
        return values @ (out_weight @ self.folded_readout().to(out_weight))


@register
class OpenClipViT(CocaPooling, VisionTower):
    """open_clip's own VisionTransformer: class-token pooling (OpenAI, LAION, DataComp, DFN, MetaCLIP; QuickGELU
    variants), average pooling with the norm after the pool (CLIPA), and CoCa's attention pooler
    (`CocaPooling`)."""

    name = "open_clip ViT"
    description = ("open_clip VisionTransformer: class token (OpenAI, LAION, DataComp, DFN, MetaCLIP), average pool "
                   "(CLIPA), attention pooler (CoCa)")
    BLOCK_PARAMETERS = ("ln_1.weight", "attn.in_proj_weight", "attn.out_proj.weight", "ln_2.weight")

    @classmethod
    def refuses(cls, visual: torch.nn.Module) -> str | None:
        from open_clip.transformer import VisionTransformer

        if not isinstance(visual, VisionTransformer):
            return f"not an open_clip VisionTransformer ({type(visual).__name__})"
        pool = getattr(visual, "pool_type", "tok")
        if getattr(visual, "attn_pool", None) is not None:
            reason = CocaPooling.pooler_refuses(visual)
            if reason:
                return reason
        elif pool not in ("tok", "avg") or (pool == "avg" and not getattr(visual, "final_ln_after_pool", False)):
            return f"its readout pools with '{pool}' and normalises each token before pooling"
        blocks = list(visual.transformer.resblocks)
        for block in blocks:
            names = {name for name, _ in block.named_parameters()}
            missing = [name for name in cls.BLOCK_PARAMETERS if name not in names]
            if missing:
                return (f"its blocks lack the parameters {', '.join(missing)} (an open_clip version whose "
                        "attention this family does not know yet)")
            if getattr(block.attn, "num_heads", None) is None or not getattr(block.attn, "batch_first", True):
                return "its attention is not batch-first multi-head attention"
            if any(hasattr(block, extra) for extra in ("ln_attn", "q_norm", "k_norm")) or \
                    not isinstance(getattr(block, "ln_1", None), torch.nn.LayerNorm):
                return "its blocks add norms inside attention (qk-norm, scaled cosine attention)"
        return None

    def __init__(self, visual: torch.nn.Module):
        self.visual = visual
        self.blocks = list(visual.transformer.resblocks)
        self.layers = len(self.blocks)
        self.heads = int(self.blocks[0].attn.num_heads)
        self.width = int(visual.transformer.width)
        self.head_dim = self.width // self.heads
        self.embed_dim = int(visual.proj.shape[1])
        self.grid = tuple(visual.grid_size)
        self.patch_size = tuple(visual.patch_size)
        self.image_size = tuple(visual.image_size)
        self.prefix = 1
        self.pool_type = visual.pool_type
        self.pooler = getattr(visual, "attn_pool", None)
        self.fixed_pool = self.pooler is None

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        x = visual.conv1(batch).flatten(2).transpose(1, 2)  # [B, patches, W]
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(x)

    def qkv(self, layer, x):
        return resblock_qkv(self.blocks[layer], x, self.heads)

    def out_maps(self, layer):
        block = self.blocks[layer]
        weight = _parameter(block, "attn.out_proj.weight")  # [W, W]: out = o @ W^T
        maps = weight.T.reshape(self.heads, self.head_dim, self.width)
        return maps * self._layer_scale(block, "ls_1").to(maps)

    def out_bias(self, layer):
        block = self.blocks[layer]
        bias = _parameter(block, "attn.out_proj.bias")
        if bias is None:
            return torch.zeros(self.width, device=block.ln_1.weight.device)
        return bias * self._layer_scale(block, "ls_1").to(bias)

    def heads_output(self, layer, mixed, removed=None, means=None):
        return resblock_output(self.blocks[layer], mixed, removed, means)

    def mlp(self, layer, x):
        return resblock_mlp(self.blocks[layer], x)

    def pool_weights(self, device=None):
        return self.class_token_or_patches(self.pool_type == "tok", device)  # 'avg' pools the patches alone

    def readout_norm(self):
        norm = self.visual.ln_post
        return norm.weight, norm.bias, norm.eps

    def projection(self):
        return self.visual.proj

    def _layer_scale(self, block: torch.nn.Module, name: str) -> torch.Tensor:
        gamma = _parameter(block, f"{name}.gamma")
        return gamma if gamma is not None else torch.ones(self.width, device=block.ln_1.weight.device)


class LatentPooling(AttentionPooling):
    """The readout of a timm trunk with an attention pooler (`AttentionPoolLatent`, one latent query: SigLIP,
    SigLIP 2, PE-Core), after the trunk's final norm and before its head (a linear map, or none), linearised at the
    input: the pooler's attention over the tokens and the final norm's statistics fixed, a part at token t reaches
    the embedding through each pooling head p with the coefficient a_p[t] / std_t and the map
    `C diag(gamma) W_v,p^T W_proj,p^T` (then the head); the pooler's MLP is a part of its own, in the rest. A
    family mixes it in and sets `trunk` and `pooler` (None: its fixed-pool readout is used instead)."""

    trunk: torch.nn.Module
    pooler: torch.nn.Module | None

    @staticmethod
    def pooler_refuses(trunk: torch.nn.Module) -> str | None:
        pooler = trunk.attn_pool
        if pooler.latent_len != 1 or pooler.pos_embed is not None or pooler.pool != "token":
            return "its attention pooler has several latents or position embeddings, not read yet"
        if not isinstance(trunk.fc_norm, torch.nn.Identity) or \
                not isinstance(trunk.head, (torch.nn.Identity, torch.nn.Linear)):
            return "its pooler is followed by a norm or a head that is not linear"
        return None

    @property
    def pool_heads(self) -> int:
        return int(self.pooler.num_heads)

    def _head(self, embedding: torch.Tensor) -> torch.Tensor:
        head = self.trunk.head
        return embedding if isinstance(head, torch.nn.Identity) else head(embedding)

    def pool_parts(self, x):
        pooler = self.pooler
        batch, tokens, _ = x.shape
        channels, head_dim = pooler.num_heads, pooler.head_dim
        query = pooler.q_norm(pooler.q(pooler.latent).reshape(1, channels, head_dim))[0]  # [P, hd]
        keys, values = pooler.kv(self.trunk.norm(x)).reshape(batch, tokens, 2, channels, head_dim).unbind(2)
        keys = pooler.k_norm(keys.transpose(1, 2)).transpose(1, 2)  # [B, T, P, hd]
        return _attended(query, keys, values, pooler.scale)

    def embedding_from_mixed(self, mixed):
        out = self.pooler.proj(mixed.flatten(1))
        return self._head(out + self.readout_mlp(out))  # the pooler's forward, in plain operations

    def readout_linearised(self, x):
        if self.pooler is None:
            return super().readout_linearised(x)
        pooler, norm, width = self.pooler, self.trunk.norm, self.trunk.embed_dim
        inv_std = torch.rsqrt(x.var(dim=-1, unbiased=False) + norm.eps)  # [B, T]
        parts = self.pool_parts(x)
        coefficients = parts.attention * inv_std[:, None, :]
        out = pooler.proj(parts.mixed.flatten(1))  # the pooler's output
        value_weight = pooler.kv.weight[width:]
        value_bias = norm.bias @ value_weight.T if norm.bias is not None else value_weight.new_zeros(width)
        if pooler.kv.bias is not None:
            value_bias = value_bias + pooler.kv.bias[width:]
        constant = pooler.proj(value_bias[None])[0]  # what the norm's and the values' biases give (sum_t a = 1)
        return coefficients, self._pool_maps(), self._head(constant + self.readout_mlp(out))

    def _pool_maps(self) -> torch.Tensor:
        """`[P, W, D]`: the final norm's centring and scale, each pooling head's value map, its slice of the
        pooler's projection, and the trunk's head: `C diag(gamma) W_v,p^T W_proj,p^T W_head^T`."""
        pooler, width = self.pooler, self.trunk.embed_dim
        out_weight = pooler.proj.weight.T.reshape(pooler.num_heads, pooler.head_dim, -1)  # [P, hd, W]
        if isinstance(self.trunk.head, torch.nn.Linear):
            out_weight = out_weight @ self.trunk.head.weight.T  # [P, hd, D]
        return _centred_values(self.trunk.norm, pooler.kv.weight[width:], pooler.num_heads) @ out_weight

    def readout_mlp(self, out: torch.Tensor) -> torch.Tensor:
        """`[B, W]`: the pooler's MLP branch at its output `out` (a part of its own, before the head)."""
        pooler = self.pooler
        return pooler.mlp(pooler.norm(out)) if pooler.mlp is not None else torch.zeros_like(out)


class TimmBlocks:
    """What the blocks of timm's Eva and VisionTransformer share: `norm1`, attention (`qkv` done by the family),
    an optional norm between the heads and `attn.proj` (EVA's sub-LN, linearised per token: `out_scale`), `norm2`
    and `mlp`; a family says where its two LayerScales are (`layer_scales`)."""

    blocks: list
    heads: int

    def layer_scales(self, block: torch.nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The block's LayerScale of its attention and of its MLP branch (None where it has none)."""
        raise NotImplementedError

    def attention_scale(self, layer):
        return float(self.blocks[layer].attn.scale)

    def _sub_norm(self, layer):
        norm = self.blocks[layer].attn.norm
        return norm if isinstance(norm, torch.nn.LayerNorm) else None

    def projection_input(self, layer, mixed):
        return _normed_heads(self._sub_norm(layer), mixed)

    def heads_output(self, layer, mixed, removed=None, means=None):
        block = self.blocks[layer]
        handed = _without_heads(self.projection_input(layer, mixed), removed, means)
        return _scaled(block.attn.proj(side_by_side(handed)), self.layer_scales(block)[0])

    def out_scale(self, layer, mixed):
        return _norm_inv_std(self._sub_norm(layer), mixed)

    def out_maps(self, layer):
        block = self.blocks[layer]
        maps = _projection_maps(block.attn.proj, self._sub_norm(layer), self.heads)
        return _scaled(maps, self.layer_scales(block)[0])

    def out_bias(self, layer):
        block = self.blocks[layer]
        return _scaled(_projection_bias(block.attn.proj, self._sub_norm(layer)), self.layer_scales(block)[0])

    def mlp(self, layer, x):
        block = self.blocks[layer]
        return _scaled(block.mlp(block.norm2(x)), self.layer_scales(block)[1])


@register
class TimmEva(LatentPooling, TimmBlocks, VisionTower):
    """timm's Eva as open_clip wraps it (`TimmModel`): EVA-01 / EVA-02 class-token towers, with rotary position
    embeddings on the patches, a LayerNorm between the heads and the output projection (sub-LN, linearised at
    each token: `out_scale`), SwiGLU MLPs and LayerScale, read out at the class token (or the patches' average)
    through the final norm and the trunk's head; and PE-Core's, read out by an attention pooler
    (`LatentPooling`)."""

    name = "timm Eva"
    description = "timm Eva: EVA-01, EVA-02 (class token, RoPE, sub-LN, SwiGLU), PE-Core (attention pooling)"

    @classmethod
    def refuses(cls, visual: torch.nn.Module) -> str | None:
        trunk = getattr(visual, "trunk", None)
        if trunk is None or type(trunk).__name__ != "Eva":
            return "not a timm Eva trunk"
        if getattr(trunk, "dynamic_img_size", False) or getattr(trunk, "rope_mixed", False):
            return "dynamic image sizes and per-layer rotary embeddings are not read yet"
        if any(parameter.numel() for parameter in visual.head.parameters()):
            return "open_clip adds a projection of its own after the trunk's head"
        pool, norm, fc_norm = trunk.global_pool, trunk.norm, trunk.fc_norm
        identity = torch.nn.Identity
        if getattr(trunk, "attn_pool", None) is not None:
            reason = LatentPooling.pooler_refuses(trunk)
            if reason or not isinstance(norm, torch.nn.LayerNorm):
                return reason or "its final norm is not a LayerNorm"
        elif not ((pool == "token" and isinstance(fc_norm, identity) and isinstance(norm, torch.nn.LayerNorm))
                  or (pool == "avg" and isinstance(norm, identity) and isinstance(fc_norm, torch.nn.LayerNorm))):
            return f"its readout ('{pool}', {type(norm).__name__}, {type(fc_norm).__name__}) is not pool-then-norm"
        elif not isinstance(trunk.head, torch.nn.Linear):
            return "its head is not a linear projection"
        for block in trunk.blocks:
            attention = block.attn
            if type(block).__name__ != "EvaBlock" or getattr(attention, "gate", None) is not None:
                return f"its blocks are {type(block).__name__} (post-norm or gated), not read yet"
            if getattr(attention, "num_kv_groups", 1) != 1:
                return "its attention shares keys and values between heads (grouped queries), not read yet"
        return None

    def __init__(self, visual: torch.nn.Module):
        from timm.layers import apply_rot_embed_cat

        _read_timm_trunk(self, visual, getattr(visual.trunk, "attn_pool", None))
        self._rotate = apply_rot_embed_cat

    def embed(self, batch):
        trunk = self.trunk
        x, _ = trunk._pos_embed(trunk.patch_embed(batch))  # rotary embeddings are applied in `qkv`
        return trunk.norm_pre(x)

    def _rope_embedding(self, device):
        rope = self.trunk.rope
        return None if rope is None else rope.get_embed().to(device)

    def qkv(self, layer, x):
        attention = self.blocks[layer].attn
        batch, tokens, _ = x.shape
        z = self.blocks[layer].norm1(x)
        if attention.qkv is not None:
            bias = attention.qkv.bias
            if getattr(attention, "q_bias", None) is not None:
                bias = torch.cat((attention.q_bias, attention.k_bias, attention.v_bias))
            q, k, v = F.linear(z, attention.qkv.weight, bias).reshape(batch, tokens, 3, self.heads,
                                                                      -1).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (projection(z).reshape(batch, tokens, self.heads, -1).transpose(1, 2)
                       for projection in (attention.q_proj, attention.k_proj, attention.v_proj))
        q, k = attention.q_norm(q), attention.k_norm(k)
        rope = self._rope_embedding(x.device)
        if rope is not None:
            half, prefix = getattr(attention, "rotate_half", False), self.prefix
            q = torch.cat([q[:, :, :prefix], self._rotate(q[:, :, prefix:], rope, half=half)], dim=2).type_as(v)
            k = torch.cat([k[:, :, :prefix], self._rotate(k[:, :, prefix:], rope, half=half)], dim=2).type_as(v)
        return q, k, v

    def layer_scales(self, block):
        return block.gamma_1, block.gamma_2

    def pool_weights(self, device=None):
        return self.class_token_or_patches(self.trunk.global_pool == "token", device)

    def readout_norm(self):
        norm = self.trunk.norm if self.trunk.global_pool == "token" else self.trunk.fc_norm
        return norm.weight, norm.bias, norm.eps

    def projection(self):
        return self.trunk.head.weight.T

    def projection_bias(self):
        return self.trunk.head.bias


def _read_timm_trunk(tower: VisionTower, visual: torch.nn.Module, pooler: torch.nn.Module | None) -> None:
    """Set a timm family's modules and shapes from open_clip's `TimmModel` around a timm trunk."""
    tower.visual, tower.trunk = visual, visual.trunk
    trunk = tower.trunk
    tower.blocks = list(trunk.blocks)
    tower.layers = len(tower.blocks)
    tower.heads = int(tower.blocks[0].attn.num_heads)
    tower.width = int(trunk.embed_dim)
    tower.head_dim = tower.width // tower.heads
    tower.grid = tuple(trunk.patch_embed.grid_size)
    tower.patch_size = tuple(trunk.patch_embed.patch_size)
    tower.image_size = tuple(trunk.patch_embed.img_size)
    tower.prefix = int(trunk.num_prefix_tokens)
    tower.pooler = pooler
    tower.fixed_pool = pooler is None
    tower.embed_dim = _pooled_width(trunk, pooler)


def _pooled_width(trunk: torch.nn.Module, pooler: torch.nn.Module | None) -> int:
    """The embedding's width: the trunk's head's output, else the pooler's, else the trunk's."""
    if isinstance(trunk.head, torch.nn.Linear):
        return int(trunk.head.out_features)
    return int(pooler.proj.out_features) if pooler is not None else int(trunk.embed_dim)


def _scaled(tensor: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
    """`tensor` times LayerScale's `gamma` along its last axis (itself when there is none)."""
    return tensor if gamma is None else tensor * gamma


def _normed_heads(norm: torch.nn.LayerNorm | None, mixed: torch.Tensor) -> torch.Tensor:
    """`mixed` `[B, H, T, head_dim]` through a norm over the heads side by side (itself without one)."""
    if norm is None:
        return mixed
    batch, heads, tokens, head_dim = mixed.shape
    return norm(side_by_side(mixed)).reshape(batch, tokens, heads, head_dim).transpose(1, 2)


def _norm_inv_std(norm: torch.nn.LayerNorm | None, mixed: torch.Tensor) -> torch.Tensor | None:
    """`[B, T]`: 1 / the std of a norm over the heads side by side, at each token (None without one)."""
    if norm is None:
        return None
    return torch.rsqrt(side_by_side(mixed).var(dim=-1, unbiased=False) + norm.eps)


def _projection_maps(projection: torch.nn.Linear, norm: torch.nn.LayerNorm | None, heads: int) -> torch.Tensor:
    """`[H, head_dim, W_out]`: each head's map through an output projection, after a norm's centring and scale
    when one sits before it (`C diag(gamma) W^T`, rows by head)."""
    maps = projection.weight.T  # [W_in, W_out]: out = input @ W^T
    if norm is not None:
        maps = norm.weight[:, None] * maps
        maps = maps - maps.mean(dim=0, keepdim=True)
    return maps.reshape(heads, -1, maps.shape[1])


def _projection_bias(projection: torch.nn.Linear, norm: torch.nn.LayerNorm | None) -> torch.Tensor:
    """`[W_out]`: an output projection's bias, with a norm's bias before it pushed through."""
    weight = projection.weight
    bias = projection.bias if projection.bias is not None else weight.new_zeros(weight.shape[0])
    if norm is not None and norm.bias is not None:
        bias = bias + norm.bias @ weight.T
    return bias


@register
class TimmViT(LatentPooling, TimmBlocks, VisionTower):
    """timm's VisionTransformer as open_clip wraps it (`TimmModel`): SigLIP and SigLIP 2 (no class token, an
    attention-pooling head: "map"), and class-token timm ViTs. The attention pooler is linearised at each input:
    its attention over the tokens and the final norm's statistics fixed (as TextSpan fixes the attention pattern
    and `ln_post`'s statistics), a part at token t reaches the embedding through each pooling head p with the
    coefficient a_p[t] / std_t and the map `C diag(gamma) W_v,p^T W_proj,p^T`; the pooler's MLP is a part of its
    own, in `rest` (`LatentPooling.readout_mlp`)."""

    name = "timm ViT"
    description = "timm VisionTransformer: attention pooling (SigLIP, SigLIP 2), class token"
    caveat = ("SigLIP's tokenizer needs the `transformers` package and the hub; its text tower reads all 64 "
              "positions, so its interaction maps cost 64 passes a step (the app's work budget allows 1 or 2 steps)")

    @classmethod
    def refuses(cls, visual: torch.nn.Module) -> str | None:
        trunk = getattr(visual, "trunk", None)
        if trunk is None or type(trunk).__name__ != "VisionTransformer":
            return "not a timm VisionTransformer trunk"
        if getattr(trunk, "dynamic_img_size", False):
            return "dynamic image sizes (NaFlex) are not read yet"
        if any(parameter.numel() for parameter in visual.head.parameters()):
            return "open_clip adds a projection of its own after the trunk's head"
        pool = trunk.global_pool
        if pool == "map":
            reason = LatentPooling.pooler_refuses(trunk)
            if reason:
                return reason
        elif pool != "token" or not isinstance(trunk.head, torch.nn.Identity) or \
                not isinstance(trunk.fc_norm, torch.nn.Identity):
            return f"its readout ('{pool}' with a head or a norm after it) is not read yet"
        if not isinstance(trunk.norm, torch.nn.LayerNorm):
            return "its final norm is not a LayerNorm"
        for block in trunk.blocks:
            if type(block).__name__ != "Block":
                return f"its blocks are {type(block).__name__}, not read yet"
        return None

    def __init__(self, visual: torch.nn.Module):
        _read_timm_trunk(self, visual, visual.trunk.attn_pool if visual.trunk.global_pool == "map" else None)

    def embed(self, batch):
        trunk = self.trunk
        return trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(batch))))

    def qkv(self, layer, x):
        attention = self.blocks[layer].attn
        batch, tokens, _ = x.shape
        q, k, v = attention.qkv(self.blocks[layer].norm1(x)).reshape(batch, tokens, 3, self.heads,
                                                                      -1).permute(2, 0, 3, 1, 4)
        return attention.q_norm(q), attention.k_norm(k), v

    def layer_scales(self, block):
        return getattr(block.ls1, "gamma", None), getattr(block.ls2, "gamma", None)

    # --- the class-token readout (fixed pool) ------------------------------------------------------------
    def pool_weights(self, device=None):
        return self.class_token_or_patches(True, device)

    def readout_norm(self):
        norm = self.trunk.norm
        return norm.weight, norm.bias, norm.eps

    def projection(self):
        return torch.eye(self.width, device=self.trunk.norm.weight.device)

# Towers no family reads yet, with what loading one says (for the README's support table).
NOT_YET = (
    ("open_clip ViT with CoCa's 'parallel' or 'cascade' poolers (marked untested by open_clip)", "refused with a message"),
    ("timm ViT with dynamic image sizes (SigLIP 2 NaFlex)", "refused with a message"),
    ("ResNet, ConvNeXt (no attention heads)", "refused with a message"),
)
ANALYSES = "heads, head atlas and TextSpan labels, databases and their searches, topic and contrastive maps, " \
    "interaction maps, mutual knowledge, scores and head removal, bundles and the in-app build"


def support_table() -> str:
    """The README's table of families (markdown): what each registered family reads, and what is not read yet."""
    rows = [f"| {family.description} | {ANALYSES}{'; but ' + family.caveat if family.caveat else ''} |"
            for family in FAMILIES]
    rows += [f"| {tower} | {what} |" for tower, what in NOT_YET]
    return "\n".join(["| image tower | what works |", "|---|---|", *rows])
