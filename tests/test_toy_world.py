"""The generator's truth must match its drawings and its captions must match its attributes."""
import random

import numpy as np
import pytest

from interpret.toy.world import (COLOURS, COLUMNS, IMAGE_SIZE, ROWS, SHAPES, ToyObject, describe, generate,
                                 position_phrase)

SEEDS = range(60)


def test_same_seed_same_scene():
    first, second = generate(7), generate(7)
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
    assert first.objects == second.objects and first.captions == second.captions


@pytest.mark.parametrize("seed", SEEDS)
def test_masks_match_the_drawing(seed):
    scene = generate(seed)
    pixels = np.asarray(scene.image).astype(int)
    assert scene.image.size == (IMAGE_SIZE, IMAGE_SIZE) and 1 <= len(scene.objects) <= 3
    assert scene.masks.shape == (len(scene.objects), IMAGE_SIZE, IMAGE_SIZE)
    assert scene.masks.sum(axis=0).max() <= 1, "objects overlap"
    for obj, mask, box in zip(scene.objects, scene.masks, scene.boxes):
        colour = np.array(COLOURS[obj.colour])
        inside = pixels[mask]
        # pixels of the mask have the object's colour (jitter 12, anti-aliasing at the rim)
        assert np.median(np.abs(inside - colour).max(axis=1)) <= 16
        x0, y0, x1, y1 = box
        assert mask[y0:y1, x0:x1].sum() == mask.sum()  # the box holds the whole mask
        third = IMAGE_SIZE / 3  # the box's centre lies in the named third
        assert COLUMNS[int((x0 + x1) / 2 // third)] == obj.column and ROWS[int((y0 + y1) / 2 // third)] == obj.row
    background = pixels[~scene.masks.any(axis=0)]
    far = np.abs(background - scene.background).max(axis=1)
    assert np.mean(far <= 12) > 0.95, "the background is the uniform grey plus mild noise"


def test_sizes_differ():
    areas = {(shape, size): [] for shape in SHAPES for size in ("small", "large")}
    for seed in range(200):
        scene = generate(seed, count=1)
        areas[scene.objects[0].shape, scene.objects[0].size].append(scene.masks[0].sum())
    for shape in SHAPES:
        assert min(areas[shape, "large"]) > 3 * max(areas[shape, "small"])


@pytest.mark.parametrize("seed", SEEDS)
def test_captions_match_the_attributes(seed):
    scene = generate(seed, captions=8)
    words = {word for obj in scene.objects for word in (obj.colour, obj.shape, obj.size, obj.column, obj.row)}
    for caption in scene.captions:
        mentioned = set(caption.replace(",", " ").split())
        assert mentioned & set(COLOURS) <= words and mentioned & set(SHAPES) <= words
        assert mentioned & {"small", "large"} <= words


def test_caption_forms():
    red_circle = ToyObject("red", "circle", "large", "left", "middle")
    blue_square = ToyObject("blue", "square", "small", "right", "top")
    assert red_circle.phrase() == "a red circle"
    assert red_circle.phrase(size=True, position=True) == "a large red circle on the left"
    assert red_circle.phrase(shape=False) == "something red"
    assert red_circle.phrase(colour=False) == "a circle"
    assert blue_square.phrase(position=True) == "a blue square at the top right"
    assert ToyObject("orange", "cross", "small", "left", "top").phrase() == "an orange cross"
    assert position_phrase("center", "middle") == "in the center" and position_phrase("center", "top") == "at the top"
    rng = random.Random(0)
    both = {describe([red_circle, blue_square], rng) for _ in range(200)}
    assert "a red circle and a blue square" in both and "a blue square and a red circle" in both
    assert "a large red circle on the left and a small blue square at the top right" in both
