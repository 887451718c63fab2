"""How close the Build a database tab's estimate comes to the build it announces: the estimate (as the tab makes
it: a few of the images measured, the model's costs measured once) beside the build's own time, for sets of
small and large images.

    python benchmarks/build_estimate.py [--cases toy-2000 ViT-B-32-photos ViT-B-32-large toy-2000-sae ...]

Cases: `toy-0.1mp`, `toy-6mp`, `toy-24mp` (-png): toy scenes enlarged to photos of that many megapixels (JPEG; PNG)
on the toy model, with an SAE; `toy-2000`: 2,000 toy scenes (64 px) on the toy model, its toy bank;
`ViT-B-32-photos`: the 15 photos of ../shared/data/images/examples on random-init ViT-B-32, the general bank;
`ViT-B-32-large`: 24 photos of ../shared/data/images/imagenet-sample enlarged to 3000 px JPEGs (a phone's photos);
`-sae`: the same with an SAE on the middle block as well. Every build has the neuron directions of the 3 MLP layers
before the last (the default). Each set is zipped and built as the tab builds it (its estimate from a few of the
zip's members, then the extraction and the build, in the tab's batches), from nothing, in a temporary folder; the
ratio is estimate / build (1.0: exact).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from interpret.archives import extract_images, plan_archive, sample_images  # noqa: E402
from interpret.bundles import ESTIMATE_SAMPLES, build_bundle, estimate_build  # noqa: E402
from interpret.images import list_images  # noqa: E402
from interpret.models import load_model  # noqa: E402
from interpret.ui.database import JOB_BATCH  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "images"


def toy_scenes(folder: Path, count: int = 2000) -> Path:
    from interpret.toy.train import toy_scene

    for number in range(count):
        toy_scene(50_000 + number).image.save(folder / f"{number:04d}.png")
    return folder


def large_photos(folder: Path, count: int = 24, side: int = 3000) -> Path:
    from PIL import Image

    for path in sorted((SHARED / "imagenet-sample").iterdir())[:count]:
        picture = Image.open(path).convert("RGB")
        scale = side / max(picture.size)
        picture.resize((round(picture.width * scale), round(picture.height * scale))).save(
            folder / f"{path.stem}.jpg", quality=90)
    return folder


def toy_photos(megapixels: float, count: int, suffix: str = ".jpg"):
    """`count` toy scenes enlarged to `megapixels` (3:2), as a camera's JPEGs (or PNGs, which cannot be decoded
    reduced): the photo sizes a visitor's zip may hold, from 0.1 to 24 megapixels."""
    def make(folder: Path) -> Path:
        from PIL import Image

        from interpret.toy.train import toy_scene

        width = round((megapixels * 1e6 * 1.5) ** 0.5)
        for number in range(count):
            toy_scene(60_000 + number).image.resize((width, round(width / 1.5)), Image.BICUBIC).save(
                folder / f"{number:04d}{suffix}", **({"quality": 92} if suffix == ".jpg" else {}))
        return folder
    return make


CASES = {  # name: (model, bank, images, SAE blocks)
    "toy-0.1mp": ("toy", "toy", toy_photos(0.1, 40), [1]),
    "toy-6mp": ("toy", "toy", toy_photos(6, 40), [1]),
    "toy-24mp": ("toy", "toy", toy_photos(24, 20), [1]),
    "toy-24mp-png": ("toy", "toy", toy_photos(24, 10, ".png"), [1]),
    "toy-2000": ("toy", "toy", toy_scenes, []),
    "ViT-B-32-photos": ("ViT-B-32", "general", lambda folder: SHARED / "examples", []),
    "ViT-B-32-large": ("ViT-B-32", "general", large_photos, []),
    "toy-2000-sae": ("toy", "toy", toy_scenes, [1]),
    "ViT-B-32-photos-sae": ("ViT-B-32", "general", lambda folder: SHARED / "examples", [5]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    print("| case | images | estimate | build | estimate / build |\n|---|---|---|---|---|")
    for case in args.cases:
        name, bank, make, feature_layers = CASES[case]
        scratch = Path(tempfile.mkdtemp())
        try:
            images = make(scratch / "images" if (scratch / "images").mkdir() is None else None)
            model = load_model(name, None, "cpu")
            paths = list_images(images)
            archive = scratch / "images.zip"  # as a visitor uploads them: the tab's estimate and build read the zip
            with zipfile.ZipFile(archive, "w") as writer:
                for path in paths:
                    writer.write(path, path.relative_to(images).as_posix())
            members, _ = plan_archive(archive)
            started = time.perf_counter()
            seconds, _ = estimate_build(model, len(paths), bank, sample_images(archive, members, ESTIMATE_SAMPLES),
                                        feature_layers=feature_layers)
            estimating = time.perf_counter() - started
            started = time.perf_counter()
            extract_images(archive, scratch / "uploads" / "extracted", scratch / "uploads", model.reading_side)
            build_bundle(model, scratch / "uploads" / "extracted", scratch / "out", bank=bank, progress=False,
                         feature_layers=feature_layers, batch_size=JOB_BATCH)
            built = time.perf_counter() - started
            print(f"| {case} | {len(paths):,} | {seconds:.1f} s (measured in {estimating:.1f} s) | {built:.1f} s | "
                  f"{seconds / built:.2f} |", flush=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
