"""timm's Eva (`TimmEva`): EVA-01 / EVA-02 (class token, RoPE, sub-LN, SwiGLU) and PE-Core (attention pooling)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import VisionTower, register
from .timm_blocks import LatentPooling, TimmBlocks, _read_timm_trunk

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


