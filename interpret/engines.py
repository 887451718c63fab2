"""Where images are decomposed for a database or for head labels: here (the local engine, the default) or on a
Ray cluster (`--engine ray`). Both run the same two per-block functions, so they write the same bytes:

- `decode_block` (CPU): read and preprocess a block of images, batch by batch, skipping unreadable ones;
- a *task* (CPU or GPU) on the decoded batches: a small picklable object called with the model and the batches
  that returns the block's arrays. `HeadsTask`: every head's direct contribution and the embedding of each image
  (databases, head labels); `neurons.NeuronTask`: each neuron's second-order coefficients (neuron directions).

A build is a plan of numbered blocks (`plan_blocks`); each finished block is saved as a shard (`save_block`,
written to a temporary name and renamed: atomic) by the driver, and a rerun of the same plan loads the finished
shards instead of computing them again (`run_blocks`). On Ray, the driver lists the files (as the local engine
does, so that both keep the same images in the same order), Ray Data reads and preprocesses them in CPU tasks,
and decomposition runs in actors that load the model once each (on a GPU with `gpus_per_worker`; without GPUs,
Ray Data fuses the two steps into the actors, which then read their own images); the blocks come back to the
driver, which writes the shards and merges them in plan order. Ray is imported only here,
and only when the Ray engine runs.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import ImageError, InterpretError
from .images import load_image
from .integrity import write_json_atomic
from .jobs import JobBar, checkpoint

ENGINES = ("local", "ray")
RAY_REQUIREMENTS = "pip install -r requirements-ray.txt"
Batch = tuple[list[str], torch.Tensor]  # (names, preprocessed images [n, 3, H, W])


@dataclass
class Block:
    """One block of images, worked on: `rows` the names of the images read (in order), `arrays` the task's arrays
    (each with one row per image read; `HeadsTask`: "heads" `[n, L', H, D]`, "embeddings" `[n, D]`; None once
    they are on disk only), `skipped` (name, reason) of the unreadable ones."""

    rows: list[str]
    arrays: dict[str, np.ndarray] | None
    skipped: list[tuple[str, str]]


# --- the per-block functions (both engines) ----------------------------------------------------------------------

def decode_block(preprocess: Callable, root: Path, names: Sequence[str], batch_size: int,
                 short_side: int | None = None) -> tuple[list[Batch], list[tuple[str, str]]]:
    """Read (at `short_side`, the model's `reading_side`) and preprocess `root / name` for each name, `batch_size`
    names at a time: the batches of readable images (a batch may be shorter than `batch_size`, never empty) and
    the unreadable ones with the reason."""
    batches, skipped = [], []
    for start in range(0, len(names), batch_size):
        pictures, read = [], []
        for name in names[start:start + batch_size]:
            checkpoint()  # a unit of long work: stops here when nobody waits for it
            try:
                pictures.append(preprocess(load_image(Path(root) / name, short_side=short_side)))
                read.append(name)
            except ImageError as error:
                skipped.append((name, str(error)))
        if pictures:
            batches.append((read, torch.stack(pictures)))
    return batches, skipped


@dataclass(frozen=True)
class HeadsTask:
    """Every head of `layers` (summed over tokens) and the embedding of each image, as `dtype` arrays."""

    layers: tuple[int, ...]
    dtype: str = "float16"

    @torch.no_grad()
    def __call__(self, model, batches: Sequence[Batch], skipped: list[tuple[str, str]]) -> Block:
        from .decompose import decompose_image

        dtype, g = np.dtype(self.dtype), model.geometry
        rows, heads, embeddings = [], [np.zeros((0, len(self.layers), g.heads, g.embed_dim), dtype)], \
            [np.zeros((0, g.embed_dim), dtype)]
        for names, pictures in batches:
            checkpoint()
            parts = decompose_image(model, pictures.to(model.device), layers=list(self.layers), spatial=False)
            heads.append(parts.head_totals().cpu().numpy().astype(dtype))
            embeddings.append(parts.embedding.cpu().numpy().astype(dtype))
            rows += names
        return Block(rows, {"heads": np.concatenate(heads), "embeddings": np.concatenate(embeddings)}, list(skipped))


def decompose_block(model, root: Path, names: Sequence[str], task, batch_size: int) -> Block:
    """Both steps, here: read the images, then run `task` on them."""
    batches, skipped = decode_block(model.preprocess, root, names, batch_size, model.reading_side)
    return task(model, batches, skipped)


# --- shards -----------------------------------------------------------------------------------------------------

def save_block(path: Path, block: Block) -> None:
    """Write a shard atomically (temporary name, then rename)."""
    temporary = path.with_name(path.name + ".tmp.npz")
    skipped = np.array([f"{name}\t{reason}" for name, reason in block.skipped], dtype=str)
    arrays = {f"array_{name}": array for name, array in block.arrays.items()}
    np.savez(temporary, rows=np.array(block.rows, dtype=str), skipped=skipped, **arrays)
    os.replace(temporary, path)


def load_block(path: Path, arrays: bool = True) -> Block | None:
    """A finished shard (without its arrays unless `arrays`), or None when it is missing or damaged."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            skipped = [tuple(item.split("\t", 1)) for item in data["skipped"].tolist()]
            kept = {name.removeprefix("array_"): data[name] for name in data.files if name.startswith("array_")} \
                if arrays else None
            return Block(data["rows"].tolist(), kept, skipped)
    except (OSError, ValueError, KeyError):
        return None  # damaged by an interruption: computed again


def plan_blocks(names: Sequence[str], block_size: int) -> list[tuple[int, list[str]]]:
    """(block number, names) for consecutive blocks of `block_size` names."""
    return [(number, list(names[start:start + block_size]))
            for number, start in enumerate(range(0, len(names), block_size))]


def run_blocks(engine: "LocalEngine | RayEngine", model, root: Path, names: Sequence[str], task,
               batch_size: int, block_size: int, work: Path | None = None, plan_key: dict | None = None,
               progress: bool = True, description: str = "embedding images",
               keep_arrays: bool = True) -> Iterator[Block]:
    """Run `task` (`HeadsTask`, ...) on `names` (below `root`) block by block on `engine`, yielding the blocks in
    plan order. With `work`, each finished block is saved there as a shard (`shard_path`), and a rerun with the
    same plan (`plan_key` and the names) reuses the shards; without `keep_arrays`, the blocks yielded hold no
    arrays (read them from the shards one at a time: a build of millions of images never holds them all). Without
    `work`, a block is yielded as soon as it and those before it are done, and nothing of it is kept: a caller
    that reduces the blocks as they come (the neurons' streaming passes) holds one block at a time."""
    plan = plan_blocks(names, block_size)
    finished: dict[int, Block] = {}
    if work is not None:
        _start_work(work, {"key": plan_key or {}, "names": list(names), "block_size": block_size})
        for number, _ in plan:
            block = load_block(shard_path(work, number), arrays=keep_arrays)
            if block is not None:
                finished[number] = block
    bar = JobBar(total=len(names), desc=description, unit="image", disable=not progress)
    bar.update(sum(len(plan[number][1]) for number in finished))
    todo = [(number, block_names) for number, block_names in plan if number not in finished]
    following = 0  # the next block to yield, in plan order
    for number, block in engine.blocks(model, root, todo, task, batch_size):
        if work is not None:
            save_block(shard_path(work, number), block)
            if not keep_arrays:
                block = Block(block.rows, None, block.skipped)
        finished[number] = block
        bar.update(len(plan[number][1]))
        while following < len(plan) and following in finished:
            yield finished.pop(following)
            following += 1
    bar.close()
    while following < len(plan):
        yield finished.pop(following)
        following += 1


def shard_path(work: Path, number: int) -> Path:
    return work / f"chunk-{number:06d}.npz"


def _start_work(work: Path, plan: dict) -> None:
    """Keep the shards in `work` if they were made for this plan, else start afresh."""
    plan_path = work / "plan.json"
    if plan_path.is_file():
        try:
            same = json.loads(plan_path.read_text()) == plan
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan_path, plan)


# --- engines ------------------------------------------------------------------------------------------------------

class LocalEngine:
    """Everything in this process, one block after another."""

    name = "local"

    def blocks(self, model, root: Path, plan: list[tuple[int, list[str]]], task, batch_size: int
               ) -> Iterator[tuple[int, Block]]:
        for number, names in plan:
            yield number, decompose_block(model, root, names, task, batch_size)

    def __repr__(self) -> str:
        return "local engine"


class RayEngine:
    """Ray Data: CPU tasks read and preprocess the blocks' files, `workers` actors (each loads the model once, on
    `gpus_per_worker` GPUs when > 0) decompose them; blocks come back to the driver as they finish.

    `address`: None starts Ray on this machine (or joins the one this process already started), 'auto' joins the
    cluster this machine belongs to, 'ray://HOST:PORT' a remote one. The images must be readable by the workers
    at the same path (a shared file system), and the workers need this package and its dependencies installed."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int = 1, gpus_per_worker: float = 0.0):
        from .limits import check_number

        self.address = address
        self.workers = int(check_number(workers, "--workers", 1, 4096, integer=True))
        self.gpus_per_worker = float(check_number(gpus_per_worker, "--gpus-per-worker", 0, 16))

    def __repr__(self) -> str:
        where = self.address or "this machine"
        gpus = f", {self.gpus_per_worker:g} GPU each" if self.gpus_per_worker else ""
        return f"Ray engine ({self.workers} worker{'s' if self.workers != 1 else ''}{gpus}, {where})"

    def blocks(self, model, root: Path, plan: list[tuple[int, list[str]]], task, batch_size: int
               ) -> Iterator[tuple[int, Block]]:
        if not plan:
            return
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver's bar counts the blocks as they come back
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        device = "cuda" if self.gpus_per_worker > 0 else "cpu"
        spec = {"name": model.name, "pretrained": model.pretrained, "weights": model.weights_hash, "device": device,
                "task": pickle.dumps(task, protocol=5)}
        items = [{"number": number, "names": json.dumps(names)} for number, names in plan]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        dataset = dataset.map(_read_block, fn_kwargs={"preprocess": model.preprocess, "root": str(root),
                                                      "batch_size": batch_size, "short_side": model.reading_side})
        dataset = dataset.map(_Decomposer, fn_constructor_kwargs={"spec": spec},
                              compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(plan)),
                                                                 max_tasks_in_flight_per_actor=1),  # spread blocks
                              num_gpus=self.gpus_per_worker or None)
        for row in dataset.iter_rows():
            yield int(row["number"]), pickle.loads(row["block"])


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InterpretError(f"The Ray engine needs Ray: {RAY_REQUIREMENTS}") from None
    return ray


def _read_block(row: dict, preprocess: Callable, root: str, batch_size: int, short_side: int | None = None) -> dict:
    """Ray task: read and preprocess one block's images."""
    batches, skipped = decode_block(preprocess, Path(root), json.loads(row["names"]), batch_size, short_side)
    return {"number": row["number"], "decoded": pickle.dumps((batches, skipped), protocol=5)}


class _Decomposer:
    """Ray actor: loads the model once (the driver's exact weights, checked), runs the task on the blocks it is
    given."""

    def __init__(self, spec: dict):
        from .models import load_model

        self.model = load_model(spec["name"], spec["pretrained"], device=spec["device"])
        if self.model.weights_hash != spec["weights"]:
            raise InterpretError(f"A Ray worker loaded other weights for {self.model.label} than the driver's "
                                 f"({self.model.weights_hash[:12]}, not {spec['weights'][:12]}).")
        self.task = pickle.loads(spec["task"])

    def __call__(self, row: dict) -> dict:
        batches, skipped = pickle.loads(row["decoded"])
        block = self.task(self.model, batches, skipped)
        return {"number": row["number"], "block": pickle.dumps(block, protocol=5)}


def make_engine(name: str = "local", address: str | None = None, workers: int = 1,
                gpus_per_worker: float = 0.0) -> LocalEngine | RayEngine:
    """The engine called `name` ('local' or 'ray')."""
    if name == "local":
        return LocalEngine()
    if name == "ray":
        return RayEngine(address, workers, gpus_per_worker)
    raise InterpretError(f"Unknown engine '{name}': choose one of {', '.join(ENGINES)}.")
