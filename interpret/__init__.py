"""interpret: look inside CLIP models (head decomposition, TextSpan, neighbours, maps, interactions, mutual
knowledge).

The names below are imported on first use (PEP 562), so that `python -m interpret --help` and light modules
(`interpret.limits`, `interpret.toy.world`) do not pay for importing torch and open_clip.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "decompose": ("HeadReport", "ImageDecomposition", "ScoreDecomposition", "decompose_image", "explain_caption"),
    "errors": ("CaptionError", "ImageError", "InterpretError", "ModelLoadError"),
    "explanations": ("Explanation", "explain"),
    "faithfulness": ("evaluate_maps",),
    "images": ("load_image",),
    "index": ("DatabaseError", "ImageIndex", "Neighbour", "build_index"),
    "interact": ("Interaction", "interaction_map"),
    "mutual": ("MutualKnowledge", "mutual_knowledge"),
    "neurons": ("explain_neurons", "neuron_directions"),
    "dictionaries": ("explain_features", "train_dictionaries_of", "train_features"),
    "segment": ("ImageMaps", "SpatialMap", "contrastive_map", "topic_map"),
    "models": ("ClipModel", "Geometry", "catalogue", "load_model", "model_from_config"),
    "textspan": ("describe_heads",),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted([*_WHERE, "textspan"])


def __getattr__(name: str):
    if name == "textspan":  # the module, which is callable as the function of the same name
        return importlib.import_module(".textspan", __name__)
    if name not in _WHERE:
        raise AttributeError(f"module 'interpret' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
