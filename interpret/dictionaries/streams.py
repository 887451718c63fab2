"""What dictionaries read, streamed: the token states of every chosen layer from ONE forward pass per image.

An SAE of block l reads the stream after block l `[n, T, W]`; a transcoder of MLP l reads the MLP's input (its
norm's output) and predicts its write, so its training rows are the pair `[n, T, 2W]` (input, then output). One
pass through the tower gives every chosen layer's rows at once (`dictionary_inputs`): training the transcoders of
all 12 blocks of a ViT-B reads each image once, not 12 times. `ActivationBuffer` shuffles a layer's rows across
images in a fixed amount of memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from ..jobs import checkpoint
from ..models import ClipModel, layer_index

TOKEN_BLOCK_BYTES = 64 * 2 ** 20  # token states (or features) of the images worked on at once, whatever the model


def images_within(model: ClipModel, per_token: int, budget: int = TOKEN_BLOCK_BYTES) -> int:
    """How many images' `[T, per_token]` float32 arrays fit in `budget` bytes (at least one): a pass over token
    states holds that many at once, so that its memory does not grow with the model's width or the batch."""
    return max(1, budget // (model.geometry.tokens * per_token * 4))


def row_width(model: ClipModel, kind: str) -> int:
    """The width of a training row of one layer: the stream's (SAE, readout), or the MLP's input and output side by
    side (transcoder)."""
    return model.geometry.width * (2 if kind == "transcoder" else 1)


@torch.no_grad()
def dictionary_inputs(model: ClipModel, batch: torch.Tensor, kind: str, layers: Sequence[int]
                      ) -> dict[int, torch.Tensor]:
    """One forward pass of the preprocessed `batch` `[B, 3, H, W]`; for each of `layers`, `[B, T, W]` (`kind` "sae":
    the stream after that block) or `[B, T, 2W]` ("transcoder": that MLP's input, its norm's output, then its
    write), float32, on the model's device; "readout": `{last block: [B, 1, W]}`, what the readout's last stage
    reads (`VisionTower.readout_input`). The pass stops after the last layer asked for."""
    tower = model.tower
    if kind == "readout":
        return {tower.layers - 1: tower.readout_input(tower.forward(batch.to(model.device)))[:, None].float()}
    chosen = set(layers)
    x = tower.embed(batch.to(model.device))
    rows = {}
    for index in range(max(chosen) + 1):
        x = x + tower.heads_output(index, tower.attend(index, *tower.qkv(index, x)))
        if kind == "transcoder" and index in chosen:
            read = tower.mlp_norm(index)(x)
            written = tower.mlp_from_input(index, read)
            rows[index] = torch.cat([read, written], dim=-1).float()
            x = x + written
        else:
            x = x + tower.mlp(index, x)
            if index in chosen:
                rows[index] = x.float()
    return rows


@torch.no_grad()
def token_states(model: ClipModel, images, layer: int) -> torch.Tensor:
    """`[B, T, W]`: the residual stream after block `layer` (negative: from the end) at every token."""
    layer = layer_index(layer, model.geometry.layers, model.label)
    return model.tower.forward(model.preprocess_images(images), layer + 1).float()


@torch.no_grad()
def mlp_pairs(model: ClipModel, images, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(`[B, T, W]` what block `layer`'s MLP reads, `[B, T, W]` what it writes) for `images`."""
    layer = layer_index(layer, model.geometry.layers, model.label)
    rows = dictionary_inputs(model, model.preprocess_images(images), "transcoder", [layer])[layer]
    return rows.chunk(2, dim=-1)


@dataclass(frozen=True)
class DictionaryInputsTask:
    """An engine task (`engines`): each image's `dictionary_inputs` for `layers`, arrays named 'layer-<l>'."""

    kind: str
    layers: tuple[int, ...]

    @torch.no_grad()
    def __call__(self, model: ClipModel, batches, skipped):
        from ..engines import Block

        width, tokens = row_width(model, self.kind), 1 if self.kind == "readout" else model.geometry.tokens
        rows, arrays = [], {layer: [np.zeros((0, tokens, width), np.float32)] for layer in self.layers}
        for names, pictures in batches:
            checkpoint()
            for layer, states in dictionary_inputs(model, pictures, self.kind, self.layers).items():
                arrays[layer].append(states.cpu().numpy())
            rows += names
        return Block(rows, {f"layer-{layer}": np.concatenate(parts) for layer, parts in arrays.items()},
                     list(skipped))


def task_blocks(blocks, layers: Sequence[int]) -> Iterator[dict[int, np.ndarray]]:
    """`DictionaryInputsTask`'s engine blocks -> `{layer: [n, T, C]}` per block."""
    for block in blocks:
        if block.rows:
            yield {layer: block.arrays[f"layer-{layer}"] for layer in layers}


def toy_blocks(model: ClipModel, kind: str, layers: Sequence[int], images: int, seed: int = 3_000_000,
               batch: int = 64) -> Iterator[dict[int, np.ndarray]]:
    """`{layer: [n, T, C]}` of `images` freshly drawn toy scenes (seeds from `seed` on: far from every other use),
    a batch at a time: the toy models' training stream."""
    from ..toy.train import toy_scene

    for start in range(0, images, batch):
        checkpoint()  # a unit of a training's work
        scenes = [toy_scene(seed + i).image for i in range(start, min(start + batch, images))]
        yield {layer: states.cpu().numpy() for layer, states in
               dictionary_inputs(model, model.preprocess_images(scenes), kind, layers).items()}


class ActivationBuffer:
    """Rows `[n, C]` shuffled through a buffer of `size` rows: `add(rows)` gives out the minibatches that are
    ready (the buffer, once full, is shuffled and half of it given out), `drain()` the rest; each row once, in an
    order mixed across images. Memory: `size x C` floats, whatever the number of images. `batches(b)` reads a
    stream of `[n, T, C]` blocks (the `tokens` of each kept) the same way."""

    def __init__(self, blocks: Iterable | None = None, size: int = 2 ** 16, seed: int = 0,
                 tokens: slice | list = slice(None), batch_size: int = 1024):
        self.blocks = blocks
        self.size = size
        self.tokens = tokens
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.buffer: torch.Tensor | None = None
        self.filled = 0
        self.seen = 0  # rows added

    def _give_out(self, stop: int) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.filled, generator=self.generator)
        self.buffer[:self.filled] = self.buffer[:self.filled][order]
        for start in range(0, stop, self.batch_size):
            yield self.buffer[start:min(start + self.batch_size, stop)].clone()
        remaining = self.buffer[stop:self.filled].clone()
        self.buffer[:len(remaining)] = remaining
        self.filled = len(remaining)

    def add(self, rows: torch.Tensor) -> Iterator[torch.Tensor]:
        """Take `rows` `[n, C]`; yield the minibatches `[batch_size, C]` ready meanwhile."""
        rows = torch.as_tensor(rows).float()
        self.seen += len(rows)
        while len(rows):
            if self.buffer is None:
                self.buffer = rows.new_empty(self.size, rows.shape[1])
            take = min(self.size - self.filled, len(rows))
            self.buffer[self.filled:self.filled + take] = rows[:take]
            self.filled += take
            rows = rows[take:]
            if self.filled == self.size:
                yield from self._give_out(max(1, self.filled // 2))

    def drain(self) -> Iterator[torch.Tensor]:
        """The rows still held, shuffled, as minibatches (the last may be shorter)."""
        if self.filled:
            yield from self._give_out(self.filled)

    def token_rows(self, block) -> torch.Tensor:
        """`[n, T, C]` -> the kept tokens' rows `[n T', C]`."""
        block = torch.as_tensor(block)
        return block[:, self.tokens].reshape(-1, block.shape[-1])

    def batches(self, size: int) -> Iterator[torch.Tensor]:
        self.batch_size = size
        for block in self.blocks:
            yield from self.add(self.token_rows(block))
        yield from self.drain()
