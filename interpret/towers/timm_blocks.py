"""What timm's two families share: their blocks (`TimmBlocks`), the latent attention pooler of SigLIP and PE-Core
(`LatentPooling`), and reading open_clip's `TimmModel` around a trunk."""
from __future__ import annotations

import torch

from .base import VisionTower, _without_heads, centred_input_maps, layer_norm_inv_std, neuron_parts, side_by_side
from .pooling import AttentionPooling, _attended


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

    def pool_output(self, mixed):
        out = self.pooler.proj(mixed.flatten(1))
        return out + self.readout_mlp(out)  # the pooler's forward, in plain operations

    def after_pool(self, output):
        return self._head(output)

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
        return centred_input_maps(self.trunk.norm, pooler.kv.weight[width:], pooler.num_heads) @ out_weight

    def readout_mlp_part(self, x):
        if self.pooler is None or self.pooler.mlp is None:
            return None
        written = self.readout_mlp(self.pooler.proj(self.pool_parts(x).mixed.flatten(1)))
        head = self.trunk.head
        return written if isinstance(head, torch.nn.Identity) else written @ head.weight.T

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

    def mlp_norm(self, layer):
        return self.blocks[layer].norm2

    def mlp_from_input(self, layer, z):
        block = self.blocks[layer]
        return _scaled(block.mlp(z), self.layer_scales(block)[1])

    def mlp_parts(self, layer, x=None):
        """`neuron_parts` of block `layer`'s timm MLP: `Mlp` (fc1, activation), `SwiGLU` (fc1_g, fc1_x: the gated
        units) or `GluMlp` (fc1's two halves), then its inner norm (LayerNorm or none) and fc2."""
        block = self.blocks[layer]
        mlp = block.mlp
        if x is None:
            units = None
        elif hasattr(mlp, "fc1_g"):
            z = block.norm2(x)
            units = mlp.act(mlp.fc1_g(z)) * mlp.fc1_x(z)
        elif hasattr(mlp, "gate_last"):
            first, second = mlp.fc1(block.norm2(x)).chunk(2, dim=-1)
            units = first * mlp.act(second) if mlp.gate_last else mlp.act(first) * second
        else:
            units = mlp.act(mlp.fc1(block.norm2(x)))
        return neuron_parts(units, mlp.norm, mlp.fc2, self.layer_scales(block)[1])

    def value_maps(self, layer):
        attention = self.blocks[layer].attn
        qkv = getattr(attention, "qkv", None)
        weight = qkv.weight[2 * qkv.weight.shape[0] // 3:] if qkv is not None else attention.v_proj.weight
        return centred_input_maps(self.blocks[layer].norm1, weight, self.heads)

    def value_inv_std(self, layer, x):
        return layer_norm_inv_std(self.blocks[layer].norm1, x)



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


