"""Shared fixtures: small models with every parameter randomised, sample images, the shared data folder."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Databases and head labels that tests build go to a scratch folder, never into the project's indexes/; each
# pytest-xdist worker has a folder of its own below it (the workers inherit the first process's environment, and two
# workers building the toy's database in one folder at once crashed one of them on a memory map cut short).
for variable, prefix in (("INTERPRET_INDEXES", "interpret-test-indexes-"), ("INTERPRET_HOME", "interpret-test-home-")):
    os.environ.setdefault(variable, tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ[variable] = tempfile.mkdtemp(prefix=f"{os.environ['PYTEST_XDIST_WORKER']}-",
                                                dir=os.environ[variable])

import open_clip
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, or they slow each other down
    torch.set_num_threads(1)
from PIL import Image

from interpret.models import ClipModel, model_from_config

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY_LAYERSCALE_CONFIG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": [40, 56], "patch_size": 8, "width": 48, "layers": 3, "head_width": 16,
                   "ls_init_value": 0.5},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def randomise_small_parameters(model: ClipModel, seed: int = 0) -> ClipModel:
    """Give every 1-D parameter (LayerNorm scales and shifts, biases, LayerScale) random values: fresh models
    have LayerNorm = identity and zero biases, which would hide mistakes in how they are folded."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.model.named_parameters():
            if parameter.dim() == 1 and name != "logit_scale" and "class_embedding" not in name:
                centre = 1.0 if ("ln" in name and name.endswith("weight")) or "gamma" in name else 0.0
                noise = torch.randn(parameter.shape, generator=generator) * 0.3
                parameter.copy_(centre + noise)
    return model


def random_batch(model: ClipModel, size: int, seed: int = 0) -> torch.Tensor:
    """`[size, 3, H, W]` random preprocessed images for `model`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, *model.geometry.image_size, generator=generator)


def architecture(name: str) -> ClipModel:
    """A fresh (uncached) random-init open_clip architecture with randomised norms and biases."""
    torch.manual_seed(0)
    return randomise_small_parameters(model_from_config(open_clip.get_model_config(name), name=name))


@pytest.fixture(scope="session")
def tiny_model() -> ClipModel:
    torch.manual_seed(0)
    return randomise_small_parameters(model_from_config(TINY_LAYERSCALE_CONFIG, name="tiny-layerscale"))


@pytest.fixture(scope="session")
def vit_b32() -> ClipModel:
    return architecture("ViT-B-32")


@pytest.fixture(scope="session")
def vit_b16() -> ClipModel:
    return architecture("ViT-B-16")


@pytest.fixture(scope="session")
def photo(tmp_path_factory) -> Path:
    """A real photo from the shared data when present, else a drawn one."""
    shared = SHARED_DATA / "images" / "examples" / "dogcat2.png"
    if shared.is_file():
        return shared
    path = tmp_path_factory.mktemp("images") / "drawn.png"
    image = Image.new("RGB", (120, 90), (230, 230, 230))
    image.paste((200, 40, 40), (10, 10, 60, 60))
    image.save(path)
    return path


def need_shared_data(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    return path


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
