"""The image trunk of the attention-pooled toy CLIP (`toy-pooled`): a 4-block timm VisionTransformer on 64 px
toy scenes, with a norm before the blocks (as CLIP's ln_pre) and SigLIP's readout (no class token; one latent
query pools the normed tokens with attention, then an MLP: timm's "map" head). It is registered in timm's registry
so that an open_clip config names it (`vision_cfg.timm_model_name`) and `local-dir:` loading rebuilds it, as any
timm tower is rebuilt."""
from __future__ import annotations

from timm.layers import build_sincos2d_pos_embed
from timm.models import is_model, register_model
from timm.models.vision_transformer import VisionTransformer

TOY_POOLED_TRUNK = "vit_toy_siglip_p8_64"
TRUNK_SETTINGS = {"img_size": 64, "patch_size": 8, "embed_dim": 128, "depth": 4, "num_heads": 8,
                  "mlp_ratio": 2.0, "class_token": False, "global_pool": "map", "pre_norm": True}


def register_toy_trunks() -> None:
    """Put the toy trunk in timm's registry (once), so that open_clip can build it by name."""
    if not is_model(TOY_POOLED_TRUNK):
        register_model(vit_toy_siglip_p8_64)


def vit_toy_siglip_p8_64(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """The toy trunk; open_clip's `TimmModel` passes `num_classes` and `global_pool`. Its position embedding is
    fixed 2-D sine-cosine (as the first toy model's), kept out of training."""
    if pretrained:
        raise ValueError(f"{TOY_POOLED_TRUNK} has no pretrained weights; train it with "
                         "`python -m interpret train-toy --pooling attention`")
    for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(timm_only, None)
    trunk = VisionTransformer(**{**TRUNK_SETTINGS, **kwargs})
    grid = trunk.patch_embed.grid_size
    trunk.pos_embed.data.copy_(build_sincos2d_pos_embed(list(grid), dim=trunk.embed_dim)[None])
    trunk.pos_embed.requires_grad_(False)
    return trunk
