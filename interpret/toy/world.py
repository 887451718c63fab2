"""A small world with known truth: 64 x 64 RGB images of 1 to 3 flat objects on a light background.

Every attribute lives here, in one place:

- colour: red (220, 40, 40), green (40, 170, 60), blue (40, 80, 220), yellow (235, 205, 30),
  purple (140, 60, 180), orange (245, 140, 30), each channel jittered by up to +-12;
- shape: circle, square, triangle, cross;
- size: small (radius about 1/10 of the side, 6.4 px) or large (about 1/5, 12.8 px);
- position: the third of the image (column left / center / right, row top / middle / bottom) holding the
  centre of the object's bounding box. Objects never touch and never share a third.

Scenes hold one object (half of them), two (30%) or three (20%).
Background: a uniform grey between 200 and 255, plus mild Gaussian noise (std 3).

Caption grammar (`describe`): an object is `[size] [colour] shape [position]`, e.g. "a red circle",
"a large red circle", "a red circle on the left", "a large red circle at the top right"; an image with several
objects joins them: "a red circle and a blue square", "a red circle, a blue square and a green cross"; one
attribute alone: "something red", "a circle", "something on the left". Position phrases: "on the left",
"in the center", "on the right" (middle row), "at the top" / "at the bottom" (center column) and
"at the top left", "at the bottom right", ... otherwise.

`generate(seed)` returns a `Scene`: the image, its ground truth (per-object pixel masks, boxes, attributes) and
captions; the same seed always gives the same scene.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # shapes are drawn 4x larger and downsampled: smooth edges, masks from the same drawing
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": IMAGE_SIZE / 10, "large": IMAGE_SIZE / 5}  # radius in pixels
COLUMNS = ("left", "center", "right")
ROWS = ("top", "middle", "bottom")
COLOUR_JITTER = 12
NOISE_STD = 3.0


def position_phrase(column: str, row: str) -> str:
    """The caption words for a third of the image."""
    if row == "middle":
        return "in the center" if column == "center" else f"on the {column}"
    if column == "center":
        return f"at the {row}"
    return f"at the {row} {column}"


def with_article(words: str) -> str:
    """'red circle' -> 'a red circle'; 'orange cross' -> 'an orange cross'."""
    return ("an " if words[:1] in tuple("aeiou") else "a ") + words


POSITIONS = tuple((column, row) for row in ROWS for column in COLUMNS)  # 9 thirds, reading order
POSITION_PHRASES = tuple(position_phrase(column, row) for column, row in POSITIONS)


@dataclass(frozen=True)
class ToyObject:
    colour: str
    shape: str
    size: str
    column: str
    row: str

    @property
    def position(self) -> str:
        return position_phrase(self.column, self.row)

    def phrase(self, colour=True, shape=True, size=False, position=False) -> str:
        """'a large red circle on the left' with the chosen attributes."""
        words = [self.size] if size else []
        words += [self.colour] if colour else []
        if shape:
            words.append(self.shape)
            text = with_article(" ".join(words))
        else:
            text = "something " + " ".join(words) if words else "something"
        return text + (f" {self.position}" if position else "")


@dataclass
class Scene:
    """One image of the world and its truth: `masks` `[objects, H, W]` bool, `boxes` `[objects, 4]`
    (x0, y0, x1, y1, pixels, inclusive-exclusive), `objects` the attributes, `captions` some true captions."""

    image: Image.Image
    objects: list[ToyObject]
    masks: np.ndarray
    boxes: np.ndarray
    background: int
    captions: list[str] = field(default_factory=list)


def shape_polygon(shape: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]] | None:
    """Vertices of a shape of the given 'radius' (half the width); None for a circle."""
    if shape == "square":
        half = radius * 0.85
        return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    if shape == "triangle":  # its bounding box is centred on (cx, cy), like every other shape's
        return [(cx, cy - radius * 0.85), (cx + radius, cy + radius * 0.85), (cx - radius, cy + radius * 0.85)]
    if shape == "cross":
        arm = radius * 0.36
        return [(cx - arm, cy - radius), (cx + arm, cy - radius), (cx + arm, cy - arm), (cx + radius, cy - arm),
                (cx + radius, cy + arm), (cx + arm, cy + arm), (cx + arm, cy + radius), (cx - arm, cy + radius),
                (cx - arm, cy + arm), (cx - radius, cy + arm), (cx - radius, cy - arm), (cx - arm, cy - arm)]
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}; shapes are {SHAPES}")


def draw_alpha(shape: str, cx: float, cy: float, radius: float) -> np.ndarray:
    """Coverage of one shape `[H, W]` in 0..1 (anti-aliased by supersampling)."""
    big = IMAGE_SIZE * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    s = SUPERSAMPLE
    polygon = shape_polygon(shape, cx * s, cy * s, radius * s)
    if polygon is None:
        draw.ellipse([(cx - radius) * s, (cy - radius) * s, (cx + radius) * s, (cy + radius) * s], fill=255)
    else:
        draw.polygon(polygon, fill=255)
    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _place(rng: random.Random, column: str, row: str, radius: float) -> tuple[float, float]:
    """A centre inside the given third that keeps the whole shape inside the image."""
    third = IMAGE_SIZE / 3
    ci, ri = COLUMNS.index(column), ROWS.index(row)
    low_x, high_x = max(ci * third, radius + 1), min((ci + 1) * third, IMAGE_SIZE - radius - 1)
    low_y, high_y = max(ri * third, radius + 1), min((ri + 1) * third, IMAGE_SIZE - radius - 1)
    margin = 2.0  # keep the centre clearly inside its third (pixel rounding must not move it out)
    return rng.uniform(low_x + margin, high_x - margin), rng.uniform(low_y + margin, high_y - margin)


def random_objects(rng: random.Random, count: int, allowed: set[tuple[str, str]] | None = None) -> list[ToyObject]:
    """`count` objects in distinct thirds; colour x shape pairs drawn from `allowed` (all by default)."""
    pairs = sorted(allowed) if allowed else [(c, s) for c in COLOURS for s in SHAPES]
    cells = rng.sample(POSITIONS, count)
    objects = []
    for column, row in cells:
        colour, shape = rng.choice(pairs)
        objects.append(ToyObject(colour, shape, rng.choice(tuple(SIZES)), column, row))
    return objects


def render(objects: list[ToyObject], rng: random.Random) -> Scene | None:
    """Draw objects (already in distinct thirds) at random spots of their thirds; None if they keep touching."""
    background = rng.randint(200, 255)
    for _ in range(30):
        alphas = [draw_alpha(o.shape, *_place(rng, o.column, o.row, SIZES[o.size]), SIZES[o.size]) for o in objects]
        masks = np.stack([alpha >= 0.5 for alpha in alphas]) if alphas else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), bool)
        touching = sum((alpha > 0).astype(np.int32) for alpha in alphas) if alphas else np.zeros(1)
        if np.max(touching) <= 1:  # no pixel touched by two objects
            break
    else:
        return None
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, NOISE_STD, (IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), float(background)) + noise
    for obj, alpha in zip(objects, alphas):
        colour = np.array([c + rng.randint(-COLOUR_JITTER, COLOUR_JITTER) for c in COLOURS[obj.colour]], float)
        pixels = pixels * (1 - alpha[..., None]) + colour * alpha[..., None]
    image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
    boxes = np.array([_box(mask) for mask in masks], dtype=np.int64).reshape(-1, 4)
    return Scene(image=image, objects=list(objects), masks=masks, boxes=boxes, background=background)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


SINGLE_OBJECT_FORMS = (  # the one-attribute captions of single objects
    {"shape": False},  # something red
    {"colour": False},  # a circle
    {"colour": False, "size": True},  # a large circle
    {"colour": False, "position": True},  # a circle on the left
    {"shape": False, "position": True},  # something red on the left
)
ATTRIBUTE_VALUES = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES)}


def _caption_form(objects: list[ToyObject], rng: random.Random) -> dict:
    """Which attributes a caption names: keyword arguments of `ToyObject.phrase`."""
    if len(objects) == 1 and rng.random() < 0.3:
        return {"colour": True, "shape": True, "size": False, "position": False, **rng.choice(SINGLE_OBJECT_FORMS)}
    return {"colour": True, "shape": True, "size": rng.random() < 0.5, "position": rng.random() < 0.7}


def describe(objects: list[ToyObject], rng: random.Random) -> str:
    """One true caption of the objects, in a randomly chosen form of the grammar."""
    return describe_with_negative(objects, rng)[0]


FULL_FORM = {"colour": True, "shape": True, "size": True, "position": True}  # "a large red circle on the left"
NEGATIVE_WEIGHTS = {"position": 3, "shape": 2, "colour": 1, "size": 1}  # the attributes a batch tests least,
# and that take longest to learn, are changed most often in hard negatives


def describe_with_negative(objects: list[ToyObject], rng: random.Random,
                           form: dict | None = None) -> tuple[str, str | None]:
    """A true caption and a false one of the same form that differs in one named attribute of one object
    (None when no such change is false). `form` fixes the named attributes (default: a random form)."""
    form = form or _caption_form(objects, rng)
    order = rng.sample(objects, len(objects))
    phrases = [obj.phrase(**form) for obj in order]
    named = [attribute for attribute, on in form.items() if on]
    for _ in range(10):
        index = rng.randrange(len(order))
        attribute = rng.choices(named, [NEGATIVE_WEIGHTS[name] for name in named])[0]
        changed = _change_one(order[index], attribute, rng)
        if not any(_same_on(changed, obj, named) for obj in objects):
            negative = phrases[:index] + [changed.phrase(**form)] + phrases[index + 1:]
            return join_phrases(phrases), join_phrases(negative)
    return join_phrases(phrases), None


def _change_one(obj: ToyObject, attribute: str, rng: random.Random) -> ToyObject:
    if attribute == "position":
        column, row = rng.choice([cell for cell in POSITIONS if cell != (obj.column, obj.row)])
        return replace(obj, column=column, row=row)
    value = rng.choice([v for v in ATTRIBUTE_VALUES[attribute] if v != getattr(obj, attribute)])
    return replace(obj, **{attribute: value})


def _same_on(a: ToyObject, b: ToyObject, attributes: list[str]) -> bool:
    return all(a.position == b.position if attr == "position" else getattr(a, attr) == getattr(b, attr)
               for attr in attributes)


def join_phrases(phrases: list[str]) -> str:
    """['a red circle', 'a blue square', 'a green cross'] -> 'a red circle, a blue square and a green cross'."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


OBJECT_COUNTS, OBJECT_COUNT_WEIGHTS = (1, 2, 3), (0.5, 0.3, 0.2)


def generate(seed: int, count: int | None = None, allowed: set[tuple[str, str]] | None = None,
             captions: int = 3) -> Scene:
    """The scene of `seed`: 1 to 3 objects (half of the scenes hold one; or `count`), with `captions` captions drawn from the grammar."""
    rng = random.Random(seed)
    count = count or rng.choices(OBJECT_COUNTS, OBJECT_COUNT_WEIGHTS)[0]
    scene = None
    while scene is None:  # two large objects in neighbouring thirds may not fit: draw others
        objects = random_objects(rng, count, allowed)
        scene = render(objects, rng)
    scene.captions = [describe(objects, rng) for _ in range(captions)]
    return scene

