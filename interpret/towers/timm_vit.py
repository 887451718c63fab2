"""timm's VisionTransformer (`TimmViT`): SigLIP and SigLIP 2 (attention pooling), class-token timm ViTs."""
from __future__ import annotations

import torch

from .base import VisionTower, register
from .timm_blocks import LatentPooling, TimmBlocks, _read_timm_trunk

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
