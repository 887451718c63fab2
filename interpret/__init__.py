"""interpret: look inside CLIP models (head decomposition, TextSpan, neighbours, maps, interactions)."""
from .decompose import HeadReport, ImageDecomposition, ScoreDecomposition, decompose_image, explain_caption
from .errors import CaptionError, ImageError, InterpretError, ModelLoadError
from .images import load_image
from .index import DatabaseError, ImageIndex, Neighbour, build_index
from .segment import ImageMaps, SpatialMap, contrastive_map, topic_map
from .models import ClipModel, Geometry, catalogue, load_model, model_from_config

__all__ = [
    "CaptionError", "ClipModel", "DatabaseError", "Geometry", "HeadReport", "ImageDecomposition", "ImageError",
    "ImageIndex", "ImageMaps", "InterpretError", "ModelLoadError", "Neighbour", "ScoreDecomposition", "SpatialMap",
    "build_index", "catalogue", "contrastive_map", "decompose_image", "explain_caption", "load_image",
    "load_model", "model_from_config", "topic_map",
]
