"""interpret: look inside CLIP models (head decomposition, TextSpan, neighbours, maps, interactions, mutual
knowledge)."""
from .decompose import HeadReport, ImageDecomposition, ScoreDecomposition, decompose_image, explain_caption
from .errors import CaptionError, ImageError, InterpretError, ModelLoadError
from .images import load_image
from .index import DatabaseError, ImageIndex, Neighbour, build_index
from .interact import Interaction, interaction_map
from .mutual import MutualKnowledge, mutual_knowledge
from .segment import ImageMaps, SpatialMap, contrastive_map, topic_map
from .models import ClipModel, Geometry, catalogue, load_model, model_from_config

__all__ = [
    "CaptionError", "ClipModel", "DatabaseError", "Geometry", "HeadReport", "ImageDecomposition", "ImageError",
    "ImageIndex", "ImageMaps", "Interaction", "InterpretError", "ModelLoadError", "MutualKnowledge", "Neighbour",
    "ScoreDecomposition", "SpatialMap", "build_index", "catalogue", "contrastive_map", "decompose_image",
    "explain_caption", "interaction_map", "load_image", "load_model", "model_from_config", "mutual_knowledge", "topic_map",
]
