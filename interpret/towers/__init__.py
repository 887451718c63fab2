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

One file per family (timm's `models/`): `open_clip_vit.OpenClipViT` (open_clip's VisionTransformer: class token,
CLIPA's average, CoCa's pooler), `timm_eva.TimmEva` (EVA-01/02, PE-Core), `timm_vit.TimmViT` (SigLIP, SigLIP 2,
class-token timm ViTs); `base` holds `VisionTower` and the registry, `pooling` and `timm_blocks` what families
share. CoCa's 'parallel' poolers, NaFlex and ResNets are refused with a message (`tower_of`); `support_table()` is
the README's table.
"""
from __future__ import annotations

from .base import FAMILIES, VisionTower, register, side_by_side, tower_of
from .open_clip_vit import OpenClipViT, resblock_mlp, resblock_output, resblock_qkv  # registered in this order:
from .timm_eva import TimmEva  # `tower_of` tries the families as they were registered
from .timm_vit import TimmViT
from .timm_blocks import LatentPooling

# Towers no family reads yet, with what loading one says (for the README's support table).
NOT_YET = (
    ("open_clip ViT with CoCa's 'parallel' or 'cascade' poolers (marked untested by open_clip)", "refused with a message"),
    ("timm ViT with dynamic image sizes (SigLIP 2 NaFlex)", "refused with a message"),
    ("ResNet, ConvNeXt (no attention heads)", "refused with a message"),
)
ANALYSES = "heads, head atlas and TextSpan labels, databases and their searches, topic and contrastive maps, " \
    "interaction maps, mutual knowledge, scores and head removal, neurons' second-order effects, SAE features, " \
    "bundles and the in-app build"


def support_table() -> str:
    """The README's table of families (markdown): what each registered family reads, and what is not read yet."""
    rows = [f"| {family.description} | {ANALYSES}{'; but ' + family.caveat if family.caveat else ''} |"
            for family in FAMILIES]
    rows += [f"| {tower} | {what} |" for tower, what in NOT_YET]
    return "\n".join(["| image tower | what works |", "|---|---|", *rows])


__all__ = ["FAMILIES", "LatentPooling", "OpenClipViT", "TimmEva", "TimmViT", "VisionTower", "register", "resblock_mlp",
           "resblock_output", "resblock_qkv", "side_by_side", "support_table", "tower_of"]
