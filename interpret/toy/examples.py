"""The toy-world example images shipped in assets/examples, and the toy model's example database (evaluation
seeds, so never trained on)."""
from __future__ import annotations

from pathlib import Path

from ..models import ClipModel
from ..paths import ASSETS
from .world import generate, join_phrases

EXAMPLE_SEEDS = (1003, 1001, 1030, 1005, 1000, 1043)
EXAMPLES_DIR = ASSETS / "examples"


def example_path(seed: int) -> Path:
    return EXAMPLES_DIR / f"toy-{seed}.png"


def example_caption(seed: int) -> str:
    """The scene's plain caption: its objects' colour and shape, joined."""
    return join_phrases([obj.phrase() for obj in generate(seed).objects])


def toy_examples() -> list[tuple[str, str]]:
    """(image path, caption) pairs for the app's example gallery."""
    return [(str(example_path(seed)), example_caption(seed)) for seed in EXAMPLE_SEEDS if example_path(seed).is_file()]


def write_examples() -> None:
    """(Re)draw the example images (`python -c "from interpret.toy.examples import write_examples; write_examples()"`)."""
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for seed in EXAMPLE_SEEDS:
        generate(seed).image.save(example_path(seed))


DATABASE_SEED = 700_000  # toy scenes of the example database; far from the example and head-label seeds
DATABASE_SIZE = 600


def build_toy_index(model: ClipModel, out: Path | None = None, count: int = DATABASE_SIZE, progress: bool = False,
                    **options):
    """Draw `count` toy scenes into `<out>/images/` and build the database of `model` over them in `out`
    (default: the model's index folder), replacing one built with earlier toy weights; `options` go to
    `build_index` (layers, batch_size, index). Returns the build report (seconds for the toy model)."""
    from ..index import build_index

    out = Path(out) if out is not None else model.index_dir
    return build_index(model, draw_toy_database(out / "images", count), out, overwrite=True, progress=progress,
                       **options)


def draw_toy_database(images: Path, count: int = DATABASE_SIZE) -> Path:
    """The toy database's `count` scenes as PNG files in `images` (those already there are kept); returns it."""
    from .train import toy_scene

    images.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = images / f"scene-{DATABASE_SEED + i}.png"
        if not path.is_file():
            temporary = path.with_name(path.name + ".tmp")  # not an image suffix: never indexed half-written
            toy_scene(DATABASE_SEED + i).image.save(temporary, format="PNG")
            temporary.replace(path)
    return images
