"""interpret: look inside CLIP models (head decomposition, TextSpan, neighbours, maps, interactions)."""
from .decompose import HeadReport, ImageDecomposition, ScoreDecomposition, decompose_image, explain_caption
from .errors import CaptionError, ImageError, InterpretError, ModelLoadError
from .images import load_image
from .index import DatabaseError, ImageIndex, Neighbour, build_index
from .models import ClipModel, Geometry, catalogue, load_model, model_from_config

__all__ = [
    "CaptionError", "ClipModel", "DatabaseError", "ImageIndex", "Neighbour", "build_index", "Geometry", "HeadReport", "explain_caption", "ImageDecomposition", "ImageError", "InterpretError",
    "ModelLoadError", "ScoreDecomposition", "catalogue", "decompose_image", "load_image", "load_model",
    "model_from_config",
]
