"""open_clip's own VisionTransformer (`OpenClipViT`): class token, CLIPA's average pool, CoCa's attention pooler;
its residual attention blocks are read by parameter name (`resblock_*`, shared with the text tower's readers)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import (VisionTower, _parameter, _without_heads, centred_input_maps, layer_norm_inv_std, neuron_parts,
                   register, side_by_side)
from .pooling import AttentionPooling, _attended

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

    def pool_output(self, mixed):
        """`[B, d]`: the first query's output, before `ln_post`."""
        return self.pooler.attn.out_proj(mixed.flatten(1))

    def after_pool(self, output):
        return self.readout(output)

    def readout_linearised(self, x):
        if self.pooler is None:
            return super().readout_linearised(x)
        pooler = self.pooler
        parts = self.pool_parts(x)
        post_inv_std = self.readout_inv_std(self.pool_output(parts.mixed))  # [B]
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
        values = centred_input_maps(self.pooler.ln_k, self._pool_projections()[2], self.pool_heads)  # [P, W, hd]
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

    def mlp_norm(self, layer):
        return self.blocks[layer].ln_2

    def mlp_from_input(self, layer, z):
        block = self.blocks[layer]
        return block.ls_2(block.mlp(z))

    def mlp_parts(self, layer, x=None):
        """`neuron_parts` of block `layer`'s MLP (c_fc, activation, an optional inner norm `ln`, c_proj)."""
        block = self.blocks[layer]
        mlp = block.mlp
        units = None if x is None else mlp.gelu(mlp.c_fc(block.ln_2(x)))
        gamma = _parameter(block, "ls_2.gamma")
        return neuron_parts(units, getattr(mlp, "ln", torch.nn.Identity()), mlp.c_proj, gamma)

    def value_maps(self, layer):
        block = self.blocks[layer]
        weight = _parameter(block, "attn.in_proj_weight")
        return centred_input_maps(block.ln_1, weight[2 * self.width:], self.heads)

    def value_inv_std(self, layer, x):
        return layer_norm_inv_std(self.blocks[layer].ln_1, x)

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


