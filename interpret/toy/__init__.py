"""The toy world (ground truth for every analysis) and the trainer of the bundled toy CLIP."""
from .world import (COLOURS, COLUMNS, IMAGE_SIZE, POSITION_PHRASES, POSITIONS, ROWS, SHAPES, SIZES, Scene,
                    ToyObject, describe, generate, position_phrase)

__all__ = ["COLOURS", "COLUMNS", "IMAGE_SIZE", "POSITIONS", "POSITION_PHRASES", "ROWS", "SHAPES", "SIZES", "Scene",
           "ToyObject", "describe", "generate", "position_phrase"]
