"""Train the bundled toy CLIP on the toy world: `python -m interpret train-toy` (about 14 minutes on 2 CPU cores).

Contrastive (InfoNCE both ways) on freshly captioned scenes, with one hard negative caption per image (the true
caption with one named attribute of one object changed, as in NegCLIP): without them nothing in a batch asks
the model to tell positions apart. The colour x shape pairs in `HELD_OUT` never appear
in training, so zero-shot accuracy on them measures composition. Fixed seed; progress bar; the result is written
as open_clip's local-dir layout (`open_clip_config.json` + `open_clip_model.safetensors`, float16).
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..models import ClipModel, model_from_config
from .defaults import STEPS, TRAINING_DEFAULTS as DEFAULTS
from .trunk import TOY_POOLED_TRUNK
from .world import (COLOURS, FULL_FORM, IMAGE_SIZE, POSITION_PHRASES, SHAPES, SIZES, Scene,
                    describe_with_negative, generate)

TOY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": 8, "width": 128, "layers": 4, "head_width": 16,
                   "mlp_ratio": 2.0, "pos_embed_type": "sin_cos_2d"},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3,
                 "mlp_ratio": 2.0},
}
# The second toy model (`toy-pooled`): the same text tower; the image tower is a timm trunk of the same size whose
# readout is SigLIP's attention pooler (`trunk.py`), so its embedding is the trunk's width.
TOY_POOLED_CONFIG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": IMAGE_SIZE, "timm_model_name": TOY_POOLED_TRUNK, "timm_pool": "map",
                   "timm_proj": "none"},
    "text_cfg": TOY_CONFIG["text_cfg"],
}
POOLINGS = {"class-token": TOY_CONFIG, "attention": TOY_POOLED_CONFIG}  # train-toy --pooling
HELD_OUT = frozenset({("purple", "triangle"), ("orange", "cross"), ("yellow", "circle")})
TRAINING_PAIRS = frozenset((c, s) for c in COLOURS for s in SHAPES) - HELD_OUT
MEAN = np.array((0.48145466, 0.4578275, 0.40821073), dtype=np.float32)  # open_clip's (OpenAI) normalisation
STD = np.array((0.26862954, 0.26130258, 0.27577711), dtype=np.float32)
TRAINING_SEED_OFFSET = 10_000_000  # training scenes use seeds from here on; evaluation scenes use seeds below


def to_batch(images: list) -> torch.Tensor:
    """64 x 64 RGB images -> the normalised `[B, 3, 64, 64]` batch the model's preprocess would give."""
    array = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
    return torch.from_numpy(((array - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def _training_scene(seed: int) -> tuple[np.ndarray, list]:
    scene = generate(TRAINING_SEED_OFFSET + seed, allowed=set(TRAINING_PAIRS), captions=0)
    return np.asarray(scene.image), scene.objects


def toy_token_ids(clip: ClipModel) -> list[int]:
    """Ids of every token the toy grammar can produce, start and end included."""
    words = " ".join([*COLOURS, *SHAPES, *SIZES, *POSITION_PHRASES, "a an something and ,"])
    return sorted(set(clip.tokenizer.encode(words)) | {clip.tokenizer.sot_token_id, clip.tokenizer.eot_token_id})


def make_training_set(count: int, workers: int = 2) -> tuple[np.ndarray, list[list]]:
    """`count` scenes (uint8 images `[N, 64, 64, 3]` and their objects), drawn in parallel."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(_training_scene, range(count), chunksize=256), total=count,
                            desc="drawing scenes", unit="scene"))
    return np.stack([image for image, _ in results]), [objects for _, objects in results]




def train(out_dir: Path, steps: int | None = None, batch_size: int = DEFAULTS["batch_size"],
          scenes: int = DEFAULTS["scenes"], seed: int = DEFAULTS["seed"],
          learning_rate: float = DEFAULTS["learning_rate"], warm_start: float = DEFAULTS["warm_start"],
          pooling: str = "class-token", progress: bool = True) -> ClipModel:
    """Train a fresh toy CLIP and save it to `out_dir`; returns it (eval mode). `pooling`: the image tower's
    readout, "class-token" (the bundled `toy`) or "attention" (`toy-pooled`, SigLIP's pooler); `steps`: default
    `defaults.STEPS` of that readout.

    For the first `warm_start` share of the steps, batches hold single objects only, each captioned in full
    ("a large red circle on the left"): every attribute, position included, is then needed to tell the captions of
    a batch apart, which gets both towers off the symmetric start where neither sees position."""
    started = time.monotonic()
    steps = STEPS[pooling] if steps is None else steps
    torch.manual_seed(seed)
    rng = random.Random(seed)
    images, objects = make_training_set(scenes)
    singles = [i for i, scene_objects in enumerate(objects) if len(scene_objects) == 1]
    config = POOLINGS[pooling]
    clip = model_from_config(config, name="toy")
    model = clip.model.train()
    with torch.no_grad():  # tokens the toy world never uses stay zero (weight decay keeps them there): the
        unused = torch.ones(model.token_embedding.num_embeddings, dtype=torch.bool)  # saved file compresses well
        unused[toy_token_ids(clip)] = False  # the world's own words keep their random start: zeros would be
        model.token_embedding.weight[unused] = 0.0  # a symmetric saddle ('left' = 'right' until images differ)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.05, betas=(0.9, 0.98))
    warmup = max(steps // 20, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / steps))))
    bar = tqdm(range(steps), desc="training toy CLIP", unit="step", disable=not progress)
    for step in bar:
        warming = step < warm_start * steps
        picks = [rng.choice(singles) if warming else rng.randrange(scenes) for _ in range(batch_size)]
        batch = to_batch(list(images[picks]))
        pairs = [describe_with_negative(objects[i], rng, FULL_FORM if warming else None) for i in picks]
        captions = [caption for caption, _ in pairs]
        negatives = [negative for _, negative in pairs if negative is not None]
        image_features = F.normalize(model.encode_image(batch), dim=-1)
        text_features = F.normalize(model.encode_text(clip.tokenizer(captions + negatives)), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T  # [B, B + negatives]
        # captions of identical scenes are both right: soft targets over exact duplicates
        same = torch.tensor([[c == d for d in captions] for c in captions], dtype=torch.float32)
        targets = same / same.sum(dim=1, keepdim=True)
        image_to_text = F.cross_entropy(logits, F.pad(targets, (0, len(negatives))))
        text_to_image = F.cross_entropy(logits[:, :batch_size].T, targets)
        loss = (image_to_text + text_to_image) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    save(clip, out_dir, config, minutes=(time.monotonic() - started) / 60, steps=steps, seed=seed,
         warm_start=warm_start, pooling=pooling)
    model.eval()
    return clip


def save(clip: ClipModel, out_dir: Path, model_config: dict, **training) -> None:
    """Write open_clip's local-dir layout: config (with how it was trained) and float16 safetensors weights."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to(torch.float16).contiguous() for name, tensor in clip.model.state_dict().items()}
    config = {
        "model_cfg": model_config,
        "preprocess_cfg": {"size": IMAGE_SIZE, "mean": MEAN.tolist(), "std": STD.tolist(),
                           "interpolation": "bicubic", "resize_mode": "shortest"},
        "training": {**training, "held_out": sorted(map(list, HELD_OUT)), "torch": torch.__version__},
    }
    weights, config_path = out_dir / "open_clip_model.safetensors", out_dir / "open_clip_config.json"
    save_file(state, str(weights) + ".tmp")
    os.replace(str(weights) + ".tmp", weights)
    config_path.with_suffix(".tmp").write_text(json.dumps(config, indent=2))
    os.replace(config_path.with_suffix(".tmp"), config_path)


def toy_scene(seed: int, count: int | None = None) -> Scene:
    """An evaluation scene (seeds below TRAINING_SEED_OFFSET are never trained on; all pairs allowed)."""
    if seed >= TRAINING_SEED_OFFSET:
        raise ValueError("evaluation seeds must be below TRAINING_SEED_OFFSET")
    return generate(seed, count=count)


def toy_images(count: int, seed: int = 500_000) -> list:
    """Images of `count` evaluation scenes (1 to 3 objects) for describing heads; never trained on."""
    return [toy_scene(seed + i).image for i in range(count)]
