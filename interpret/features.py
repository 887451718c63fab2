"""Below the heads (2): sparse-autoencoder features of a tower's token states, trained here or loaded, browsed,
named and tied to the heads and neurons that write them.

An SAE reads the residual stream after block `layer` at every token (patches, the class token, registers; any family
through the seam: `VisionTower.forward(batch, layer + 1)`). With the input `u = norm(x)` (a fixed scale here; a
loaded SAE's own normalisation), its features are `f = act(u W_enc + b_enc)` (saev) or `act((u - b_dec) W_enc +
b_enc)` (ViT-Prisma, the recipe trained here), `act` TopK (saev's default: the k largest pre-activations, ReLU'd) or
ReLU, and the reconstruction is `f W_dec + b_dec` (unit-norm decoder rows). `SparseAutoencoder` holds either kind,
so a loaded checkpoint encodes exactly as its authors' code.

Training (`train_sae`, saev's current recipe by default): TopK k = 32 with the AuxK loss for dead features (Gao et
al. 2024: the top 512 dead latents reconstruct the residual, weight 1/32), decoder rows kept at unit norm (their
parallel gradient removed), the encoder initialised from the decoder's transpose and the decoder from data (saev's
"datapoint" init), the decoder bias at the data's geometric median (or mean), Adam at 4e-4 with a warm-up and
gradient clipping; or ReLU + L1 (ViT-Prisma's). Token states stream through a shuffle buffer of a fixed size
(`ActivationBuffer`): memory does not grow with the number of images.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InterpretError
from .integrity import LoadedFiles
from .jobs import JobBar, checkpoint
from .models import ClipModel, layer_index

SAE_FILE, SAE_MANIFEST = "sae.safetensors", "sae.json"
ATLAS_MANIFEST = "atlas.json"  # beside them: the atlas (`FeatureAtlas`)
FEATURES_FOLDER = "features"  # in a model's folder: features/layer-<l>/


@dataclass
class SaeConfig:
    """An SAE's shape and kind. `width`: the stream's width (d_model); `features`: d_sae; `activation`: "topk" or
    "relu"; `k`: TopK's k; `subtract_decoder_bias`: encode `u - b_dec` (Prisma, ours) or `u` (saev);
    `normalisation`: "scale" (multiply by `input_scale`: ours), "layer_norm" or "constant_norm_rescale" (Prisma's
    run-time norms), "none"; `layer`: the block whose output stream it reads; `tokens`: "all" or "patches"; `source`:
    where it came from ("trained here", "ViT-Prisma", "saev")."""

    width: int
    features: int
    layer: int
    activation: str = "topk"
    k: int = 32
    subtract_decoder_bias: bool = True
    normalisation: str = "scale"
    input_scale: float = 1.0
    tokens: str = "all"
    source: str = "trained here"


class SparseAutoencoder(torch.nn.Module):
    """`W_enc` `[W, F]`, `b_enc` `[F]`, `W_dec` `[F, W]` (unit rows once trained here), `b_dec` `[W]`."""

    def __init__(self, config: SaeConfig):
        super().__init__()
        self.config = config
        self.W_enc = torch.nn.Parameter(torch.zeros(config.width, config.features))
        self.b_enc = torch.nn.Parameter(torch.zeros(config.features))
        self.W_dec = torch.nn.Parameter(torch.zeros(config.features, config.width))
        self.b_dec = torch.nn.Parameter(torch.zeros(config.width))

    # --- the input as the SAE sees it ---------------------------------------------------------------------
    def normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`x` `[..., W]` -> (u, shift, scale) with `u = (x - shift) * scale` (shift and scale per token, or
        constants): the SAE's input; `denormalised` undoes it."""
        kind = self.config.normalisation
        if kind == "scale":
            return x * self.config.input_scale, x.new_zeros(()), x.new_tensor(self.config.input_scale)
        if kind == "none":
            return x, x.new_zeros(()), x.new_ones(())
        if kind == "layer_norm":  # Prisma's: (x - mean) / (std + 1e-5), std with Bessel's correction
            mean = x.mean(dim=-1, keepdim=True)
            scale = 1 / (x.std(dim=-1, keepdim=True) + 1e-5)
            return (x - mean) * scale, mean, scale
        if kind == "constant_norm_rescale":  # Prisma's: each token scaled to norm sqrt(width)
            scale = self.config.width ** 0.5 / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            return x * scale, x.new_zeros(()), scale
        raise InterpretError(f"Unknown SAE input normalisation '{kind}'.")

    def pre_activations(self, u: torch.Tensor) -> torch.Tensor:
        """`[..., F]`: the encoder's pre-activations of a normalised input `u` `[..., W]`."""
        if self.config.subtract_decoder_bias:
            u = u - self.b_dec
        return u @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """TopK (the k largest pre-activations, the others zero; negative ones zero too) or ReLU."""
        if self.config.activation == "relu":
            return F.relu(pre)
        values, indices = pre.topk(min(self.config.k, pre.shape[-1]), dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`[..., F]`: the features of stream states `x` `[..., W]` (as they are: `encode` normalises them)."""
        return self.activate(self.pre_activations(self.normalised(x)[0]))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """`[..., W]` in the normalised space."""
        return features @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of `x` `[..., W]`, in the stream's own units."""
        u, shift, scale = self.normalised(x)
        return self.decode(self.activate(self.pre_activations(u))) / scale + shift

    @torch.no_grad()
    def unit_decoder(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp(min=1e-12)

    @torch.no_grad()
    def remove_parallel_gradients(self) -> None:
        """Take out of W_dec's gradient the part along each row (unit rows stay unit: Anthropic's advice)."""
        if self.W_dec.grad is not None:
            along = (self.W_dec.grad * self.W_dec.data).sum(dim=1, keepdim=True)
            self.W_dec.grad -= along * self.W_dec.data

    # --- storage ------------------------------------------------------------------------------------------
    def save(self, folder: Path, **extra) -> Path:
        """`folder/sae.safetensors` and `sae.json` (the config, and `extra`: model, metrics...), written whole."""
        import os
        import uuid

        from safetensors.torch import save_file

        from .integrity import write_json_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"{SAE_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        save_file({name: tensor.detach().float().contiguous().cpu() for name, tensor in self.state_dict().items()},
                  str(temporary))
        os.replace(temporary, folder / SAE_FILE)
        write_json_atomic(folder / SAE_MANIFEST, {"config": dataclasses.asdict(self.config), **extra})
        return folder

    @classmethod
    def load(cls, folder: Path) -> tuple["SparseAutoencoder", dict]:
        """An SAE `save` wrote, and its manifest."""
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            manifest = json.loads((folder / SAE_MANIFEST).read_text())
            sae = cls(SaeConfig(**manifest["config"]))
            sae.load_state_dict(load_file(str(folder / SAE_FILE)))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            raise InterpretError(f"No SAE in {folder} ({error}).") from None
        return sae.eval(), manifest


def features_folder(folder, layer: int) -> Path:
    """Where a model folder (`indexes/<slug>`, a bundle) keeps the SAE of the stream after block `layer`."""
    return Path(folder) / FEATURES_FOLDER / f"layer-{layer:02d}"


# --- token states, streamed ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenStatesTask:
    """An engine task (`engines`): each image's stream after block `layer`, `[n, T, W]` float32."""

    layer: int

    @torch.no_grad()
    def __call__(self, model: ClipModel, batches, skipped):
        from .engines import Block

        rows, states = [], [np.zeros((0, model.geometry.tokens, model.geometry.width), np.float32)]
        for names, pictures in batches:
            checkpoint()
            states.append(token_states(model, pictures.to(model.device), self.layer).cpu().numpy())
            rows += names
        return Block(rows, {"states": np.concatenate(states)}, list(skipped))


@torch.no_grad()
def token_states(model: ClipModel, images, layer: int) -> torch.Tensor:
    """`[B, T, W]`: the residual stream after block `layer` (negative: from the end) at every token."""
    layer = layer_index(layer, model.geometry.layers, model.label)
    return model.tower.forward(model.preprocess_images(images), layer + 1).float()


class ActivationBuffer:
    """Token states from a stream of `[n, T, W]` blocks (the `tokens` of each kept), shuffled through a buffer of
    `size` tokens: `batches(b)` yields `[b, W]` minibatches (the last may be shorter), each token once, in an order
    mixed across images (the buffer is shuffled, half of it given out, then topped up). Memory: `size x W` floats,
    whatever the number of images."""

    def __init__(self, blocks: Iterable[torch.Tensor], size: int, seed: int = 0, tokens: slice | list = slice(None)):
        self.blocks = iter(blocks)
        self.size = size
        self.tokens = tokens
        self.generator = torch.Generator().manual_seed(seed)
        self.buffer: torch.Tensor | None = None
        self.pending: torch.Tensor | None = None  # states of a block that did not fit yet
        self.filled = 0
        self.seen = 0  # tokens read from the stream
        self.dry = False

    def _next_states(self) -> torch.Tensor | None:
        if self.pending is not None:
            states, self.pending = self.pending, None
            return states
        block = next(self.blocks, None)
        if block is None:
            self.dry = True
            return None
        states = torch.as_tensor(block)[:, self.tokens].reshape(-1, block.shape[-1]).float()
        self.seen += len(states)
        return states

    def _refill(self) -> None:
        while self.filled < self.size and not self.dry:
            states = self._next_states()
            if states is None:
                break
            if self.buffer is None:
                self.buffer = states.new_empty(self.size, states.shape[1])
            take = min(self.size - self.filled, len(states))
            self.buffer[self.filled:self.filled + take] = states[:take]
            self.filled += take
            if take < len(states):
                self.pending = states[take:]

    def batches(self, size: int) -> Iterator[torch.Tensor]:
        while True:
            self._refill()
            if not self.filled:
                return
            order = torch.randperm(self.filled, generator=self.generator)
            self.buffer[:self.filled] = self.buffer[:self.filled][order]
            stop = self.filled if self.dry else max(1, self.filled // 2)
            for start in range(0, stop, size):
                yield self.buffer[start:min(start + size, stop)].clone()
            remaining = self.buffer[stop:self.filled].clone()
            self.buffer[:len(remaining)] = remaining
            self.filled = len(remaining)


# --- training -----------------------------------------------------------------------------------------------------

@dataclass
class SaeReport:
    """How well an SAE reconstructs held-out token states: explained variance (1 - squared error / variance about
    the mean), L0 (features active per token), dead features (active on no held-out token), and the training's
    tokens, seconds and tokens per second."""

    explained_variance: float
    l0: float
    dead: int
    features: int
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"explained variance {self.explained_variance:.3f}, L0 {self.l0:.1f}, dead {self.dead} of "
                f"{self.features}" + (f"; {self.tokens:,} tokens in {self.seconds:.0f} s "
                                      f"({self.tokens_per_second:,.0f}/s)" if self.tokens else ""))


def geometric_median(points: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """`[W]`: the point of least summed distance to `points` `[n, W]` (Weiszfeld's iterations from the mean)."""
    median = points.mean(dim=0)
    for _ in range(iterations):
        weights = 1 / (points - median).norm(dim=1).clamp(min=1e-8)
        median = (weights[:, None] * points).sum(dim=0) / weights.sum()
    return median


def train_sae(blocks: Iterable, width: int, layer: int, features: int | None = None, activation: str = "topk",
              k: int = 32, l1: float = 4e-4, tokens: int | None = None, batch_size: int = 1024,
              buffer_size: int = 2 ** 16, learning_rate: float = 4e-4, warmup: int = 500, auxiliary_k: int = 512,
              auxiliary_weight: float = 1 / 32, dead_after: int = 2 ** 18, decoder_bias: str = "geometric_median",
              token_choice: slice | list = slice(None), seed: int = 0, progress: bool = True,
              on_step: Callable[[int, float], None] | None = None, device: str | None = None
              ) -> tuple[SparseAutoencoder, SaeReport]:
    """Train an SAE on the token states of `blocks` (an iterable of `[n, T, W]` arrays: `TokenStatesTask`'s, or
    `toy_token_blocks`), through an `ActivationBuffer`, until the stream ends or `tokens` were used.

    `features`: default 16 x width; `activation` "topk" (with the AuxK loss: the `auxiliary_k` largest latents of
    the features not active for `dead_after` tokens reconstruct the residual, weight `auxiliary_weight`) or "relu"
    (with an L1 penalty `l1`); `decoder_bias`: "geometric_median" or "mean" of the first buffer. Inputs are scaled
    by one constant so that their mean norm is sqrt(width) (kept as `input_scale`). `device`: where the SAE trains
    (default: a GPU where there is one; the buffer stays in memory on the CPU). Returns the SAE (eval mode, on the
    CPU) and the report of its first minibatch's reconstruction (`evaluate_sae` on other images is the fair
    measure)."""
    if activation not in ("topk", "relu"):
        raise InterpretError(f"Unknown SAE activation '{activation}': choose 'topk' or 'relu'.")
    torch.manual_seed(seed)
    features = features or 16 * width
    buffer = ActivationBuffer(blocks, buffer_size, seed, token_choice)
    stream = buffer.batches(batch_size)
    first = next(stream, None)
    if first is None:
        raise InterpretError("No token states to train the SAE on.")
    scale = float(width ** 0.5 / first.norm(dim=1).mean().clamp(min=1e-12))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sae = SparseAutoencoder(SaeConfig(width, features, layer, activation, k, True, "scale", scale))
    _initialise(sae, first * scale, decoder_bias)
    sae.to(device)
    optimiser = torch.optim.Adam(sae.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / warmup))
    last_active = torch.zeros(features, dtype=torch.long, device=device)  # tokens seen when each last fired
    used, started, step = 0, time.monotonic(), 0
    total = tokens
    bar = JobBar(total=total, desc=f"training an SAE on layer {layer}", unit="token", unit_scale=True,
               disable=not progress)

    def minibatches():
        yield first
        yield from stream

    for x in minibatches():
        if tokens is not None and used >= tokens:
            break
        u = x.to(device) * scale
        pre = sae.pre_activations(u)
        codes = sae.activate(pre)
        reconstruction = sae.decode(codes)
        loss = (reconstruction - u).pow(2).sum(dim=1).mean()
        if activation == "relu":
            loss = loss + l1 * codes.abs().sum(dim=1).mean()
        used += len(x)
        last_active[(codes > 0).any(dim=0)] = used
        dead = (used - last_active) >= dead_after
        if activation == "topk" and dead.any():
            residual = (u - reconstruction).detach()
            dead_pre = pre.masked_fill(~dead, float("-inf"))
            values, indices = dead_pre.topk(min(auxiliary_k, int(dead.sum())), dim=1)
            auxiliary = torch.zeros_like(pre).scatter(1, indices, F.relu(values))
            loss = loss + auxiliary_weight * (auxiliary @ sae.W_dec - residual).pow(2).sum(dim=1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_gradients()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        sae.unit_decoder()
        step += 1
        bar.update(len(x))
        if on_step is not None:
            on_step(used, float(loss.detach()))
    bar.close()
    seconds = time.monotonic() - started
    sae = sae.cpu().eval()
    report = evaluate_sae(sae, [first])
    return sae, dataclasses.replace(report, tokens=used, seconds=seconds)


@torch.no_grad()
def _initialise(sae: SparseAutoencoder, sample: torch.Tensor, decoder_bias: str) -> None:
    """saev's datapoint init: the decoder's rows are centred data points (80 %) blended with Kaiming noise, at unit
    norm, and the encoder their transpose; the decoder bias the sample's geometric median (or mean)."""
    if decoder_bias not in ("geometric_median", "mean"):
        raise InterpretError(f"Unknown decoder bias init '{decoder_bias}': 'geometric_median' or 'mean'.")
    centre = geometric_median(sample) if decoder_bias == "geometric_median" else sample.mean(dim=0)
    rows = sample[torch.randint(len(sample), (sae.config.features,))] - sample.mean(dim=0)
    noise = torch.nn.init.kaiming_uniform_(torch.empty_like(rows))
    sae.W_dec.data.copy_(0.8 * rows + 0.2 * noise)
    sae.unit_decoder()
    sae.W_enc.data.copy_(sae.W_dec.data.T)
    sae.b_dec.data.copy_(centre)
    # The encoder's scale: data-point rows fire together and strongly (k unit rows each read with the input's whole
    # norm), so the first reconstruction was tens of times too long (explained variance -458 after a short
    # training). The features scale with the encoder (TopK and ReLU alike), so the scale that reconstructs the
    # sample best in least squares is one number: the encoder starts there.
    written = sae.decode(sae.activate(sae.pre_activations(sample))) - sae.b_dec
    wanted = sample - sae.b_dec
    fit = float((written * wanted).sum() / (written * written).sum().clamp(min=1e-12))
    if fit > 0:
        sae.W_enc.data.mul_(fit)
        sae.b_enc.data.mul_(fit)


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, batches: Iterable[torch.Tensor]) -> SaeReport:
    """The SAE's explained variance, L0 and dead features over token states `[n, W]` (in the stream's units)."""
    error = variance = active = count = 0.0
    fired = torch.zeros(sae.config.features, dtype=torch.bool)
    total = None
    sums = []
    for x in batches:
        x = x.float()
        codes = sae.encode(x)
        error += float((sae(x) - x).pow(2).sum())
        sums.append((x.sum(dim=0), (x * x).sum(dim=0), len(x)))
        active += float((codes > 0).sum())
        count += len(x)
        fired |= (codes > 0).any(dim=0)
    if not count:
        raise InterpretError("No token states to evaluate the SAE on.")
    total = sum(s for s, _, _ in sums)
    squares = sum(q for _, q, _ in sums)
    variance = float((squares - total * total / count).sum())
    return SaeReport(1 - error / max(variance, 1e-12), active / count, int((~fired).sum()), sae.config.features)


def toy_token_blocks(model: ClipModel, layer: int, images: int, seed: int = 3_000_000, batch: int = 64
                     ) -> Iterator[np.ndarray]:
    """Token states of `images` freshly drawn toy scenes (seeds from `seed` on: far from every other use), `[n, T, W]`
    a batch at a time: the toy models' SAE training stream."""
    from .toy.train import toy_scene

    for start in range(0, images, batch):
        checkpoint()  # a unit of a training's work
        scenes = [toy_scene(seed + i).image for i in range(start, min(start + batch, images))]
        yield token_states(model, scenes, layer).cpu().numpy()


# --- a model's features over a database: top images, frequency, names -------------------------------------------

FEATURE_TOP_IMAGES = 16  # each feature's top images kept (by its largest activation on one of the image's tokens)
TOKEN_BLOCK_BYTES = 64 * 2 ** 20  # token states (or features) of the images worked on at once, whatever the model
HOLD_OUT_EVERY = 10  # every 10th image read is held out of an SAE's training, to measure its reconstruction on


def images_within(model: ClipModel, per_token: int, budget: int = TOKEN_BLOCK_BYTES) -> int:
    """How many images' `[T, per_token]` float32 arrays fit in `budget` bytes (at least one): a pass over token
    states holds that many at once, so that its memory does not grow with the model's width or the batch."""
    return max(1, budget // (model.geometry.tokens * per_token * 4))


@dataclass
class FeatureAtlas:
    """What an SAE's F features do over a set of `count` images (`feature_atlas`).

    top_rows `[F, top]` each feature's images of largest activation (rows of `names`; -1 where fewer fired),
    top_values `[F, top]` that activation; frequency `[F]` the share of tokens it fires on; mean_activation `[F]`
    its mean where it fires; names: per feature (text, tag, score) from a text bank (`name_features`), or None."""

    layer: int
    top_rows: torch.Tensor
    top_values: torch.Tensor
    frequency: torch.Tensor
    mean_activation: torch.Tensor
    names: list[str]
    root: str
    labels: list[tuple[str, str, float]] | None = None
    bank: str = ""

    @property
    def count(self) -> int:
        return len(self.names)

    def save(self, folder: Path) -> Path:
        import os
        import uuid

        from safetensors.torch import save_file

        from .integrity import write_json_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"atlas.safetensors.{uuid.uuid4().hex[:8]}.tmp"
        save_file({name: getattr(self, name).contiguous() for name in
                   ("top_rows", "top_values", "frequency", "mean_activation")}, str(temporary))
        os.replace(temporary, folder / "atlas.safetensors")
        write_json_atomic(folder / ATLAS_MANIFEST, {"layer": self.layer, "names": self.names, "root": self.root,
                                                  "labels": self.labels, "bank": self.bank})
        return folder

    @classmethod
    def load(cls, folder: Path) -> "FeatureAtlas":
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            manifest = json.loads((folder / ATLAS_MANIFEST).read_text())
            tensors = load_file(str(folder / "atlas.safetensors"))
        except (OSError, ValueError) as error:
            raise InterpretError(f"No feature atlas in {folder} ({error}).") from None
        labels = [tuple(label) for label in manifest["labels"]] if manifest.get("labels") else None
        return cls(manifest["layer"], names=manifest["names"], root=manifest["root"], labels=labels,
                   bank=manifest.get("bank", ""), **tensors)


def feature_atlas(model: ClipModel, sae: SparseAutoencoder, images, top: int = FEATURE_TOP_IMAGES,
                  batch_size: int = 32, engine=None, progress: bool = True) -> FeatureAtlas:
    """Each feature's top images below the folder `images` (by its largest activation on a token), how often it
    fires and how strongly: one streaming pass (`engine`: local by default, or Ray), memory F x top."""
    from .engines import LocalEngine, run_blocks
    from .images import list_images

    root = Path(images).resolve()
    names = [path.relative_to(root).as_posix() for path in list_images(root)]
    count = sae.config.features
    best_values, best_rows = torch.full((count, 0), -1.0), torch.full((count, 0), -1, dtype=torch.long)
    fired, total, tokens, kept = torch.zeros(count), torch.zeros(count), 0, []
    chunk = images_within(model, count)  # codes [n, T, F] of this many images at a time: bounded bytes
    for block in run_blocks(engine or LocalEngine(), model, root, names, TokenStatesTask(sae.config.layer),
                            batch_size, images_within(model, model.geometry.width), progress=progress,
                            description="features of the images"):
        if not block.rows:
            continue
        states = torch.from_numpy(block.arrays["states"])[:, _token_choice(model, sae)]
        peaks = []
        for start in range(0, len(states), chunk):
            checkpoint()
            codes = sae.encode(states[start:start + chunk])  # [n, T', F]
            fired += (codes > 0).sum(dim=(0, 1))
            total += codes.sum(dim=(0, 1))
            tokens += codes.shape[0] * codes.shape[1]
            peaks.append(codes.amax(dim=1))
        peaks = torch.cat(peaks).T  # [F, n]
        rows = torch.arange(len(kept), len(kept) + len(block.rows)).expand(count, -1)
        values = torch.cat([best_values, peaks], dim=1)
        chosen = values.topk(min(top, values.shape[1]), dim=1).indices
        best_values = values.gather(1, chosen)
        best_rows = torch.cat([best_rows, rows], dim=1).gather(1, chosen)
        kept += block.rows
    best_rows = torch.where(best_values > 0, best_rows, torch.full_like(best_rows, -1))
    return FeatureAtlas(sae.config.layer, best_rows, best_values.clamp(min=0), fired / max(tokens, 1),
                        total / fired.clamp(min=1), kept, str(root))


def _token_choice(model: ClipModel, sae: SparseAutoencoder) -> slice:
    """The tokens an SAE reads: all, or the patches only (a saev checkpoint trained on its 'content' tokens)."""
    return slice(model.geometry.prefix, None) if sae.config.tokens == "patches" else slice(None)


@torch.no_grad()
def embedding_from(model: ClipModel, states: torch.Tensor, layer: int) -> torch.Tensor:
    """`[B, D]`: the image embedding (not normalised) from the stream after block `layer`, `[B, T, W]`."""
    tower = model.tower
    x = states.to(model.device)
    for index in range(layer + 1, tower.layers):
        x = tower.block(index, x)[0]
    return tower.embedding(x).float()


def name_features(model: ClipModel, atlas: FeatureAtlas, bank, batch_size: int = 32) -> FeatureAtlas:
    """Name each feature from `bank` (`banks.TextBank`) by its top images: the mean of their unit embeddings minus
    the mean over all the atlas's images (what its images share that the others do not), matched with the bank's
    texts (centred on their mean, unit): the best text, its property tag and the cosine. Features that fired on no
    image stay unnamed. Embeds every image once (streaming: the mean), then the top images."""
    root = Path(atlas.root)
    total, seen = None, 0
    for start in range(0, atlas.count, batch_size):
        checkpoint()
        units = F.normalize(model.encode_images([root / name for name in atlas.names[start:start + batch_size]])
                            .float().cpu(), dim=-1)
        total = units.sum(dim=0) if total is None else total + units.sum(dim=0)
        seen += len(units)
    mean = total / max(seen, 1)
    wanted = sorted({int(row) for row in atlas.top_rows.flatten().tolist() if row >= 0})
    embedded = {}
    for start in range(0, len(wanted), batch_size):
        rows = wanted[start:start + batch_size]
        checkpoint()
        units = F.normalize(model.encode_images([root / atlas.names[row] for row in rows]).float().cpu(),
                            dim=-1)
        embedded.update(zip(rows, units))
    texts = model.encode_texts(list(bank.texts)).float().cpu()
    texts = F.normalize(texts - texts.mean(dim=0), dim=-1)
    labels = []
    for rows in atlas.top_rows.tolist():
        chosen = [embedded[row] for row in rows if row >= 0]
        if not chosen:
            labels.append(("", "", 0.0))
            continue
        direction = F.normalize(torch.stack(chosen).mean(dim=0) - mean, dim=0)
        scores = texts @ direction
        best = int(scores.argmax())
        labels.append((bank.texts[best], bank.tags[best], round(float(scores[best]), 4)))
    atlas.labels, atlas.bank = labels, bank.name
    return atlas


# --- one image: which features fire where, who writes them, what removing them does ------------------------------

@torch.no_grad()
def image_features(model: ClipModel, sae: SparseAutoencoder, images) -> tuple[torch.Tensor, torch.Tensor]:
    """(states `[B, T, W]` after the SAE's block, features `[B, T, F]`; tokens the SAE does not read are 0)."""
    states = token_states(model, images, sae.config.layer)
    codes = torch.zeros(*states.shape[:2], sae.config.features)
    choice = _token_choice(model, sae)
    codes[:, choice] = sae.encode(states[:, choice].cpu())
    return states, codes


def feature_writes(sae: SparseAutoencoder, states: torch.Tensor, codes: torch.Tensor, features: Sequence[int]
                   ) -> torch.Tensor:
    """`[B, T, n, W]`: what each chosen feature puts into the stream at each token (its activation times its
    decoder row, in the stream's units: the SAE's normalisation undone at that token)."""
    scale = sae.normalised(states.cpu())[2].expand(*states.shape[:2], 1)
    chosen = list(features)
    return codes[..., chosen, None] * sae.W_dec[chosen].detach() / scale[..., None]


@torch.no_grad()
def intervened_scores(model: ClipModel, sae: SparseAutoencoder, images, texts: torch.Tensor,
                      features: Sequence[int], strength: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(`[B, M]` cosine scores of the images with unit texts `[M, D]` as they are, `[n, B, M]` with each chosen
    feature removed from every token where it fires (`strength` None), or added at every token the SAE reads
    with activation `strength`), the rest of the tower run again after the SAE's block."""
    states, codes = image_features(model, sae, images)
    texts = texts.float().cpu()
    base = F.normalize(embedding_from(model, states, sae.config.layer).cpu(), dim=-1) @ texts.T
    changed = []
    for feature in features:
        if strength is None:
            delta = -feature_writes(sae, states, codes, [feature])[:, :, 0]
        else:
            added = torch.zeros_like(codes)
            added[:, _token_choice(model, sae), feature] = float(strength)
            delta = feature_writes(sae, states, added, [feature])[:, :, 0]
        changed.append(states + delta.to(states))
    if not changed:
        return base, base.new_zeros(0, *base.shape)
    batch = len(states)
    embeddings = embedding_from(model, torch.cat(changed), sae.config.layer).cpu()  # every change in one pass
    scores = F.normalize(embeddings, dim=-1) @ texts.T
    return base, scores.reshape(len(changed), batch, -1)


@dataclass
class FeatureWriters:
    """Who writes feature `feature` (of the SAE on the stream after block `layer`): its pre-activation, averaged over
    the tokens where it fires (weighted by its activation), split exactly into the parts of the stream there: the
    embedding layer, every head of blocks 0..layer (`heads` `[layer + 1, H]`), every MLP neuron of them (`neurons`
    `[layer + 1, N]`), and the rest (biases: of the heads' and MLPs' outputs, of the SAE). `tokens`: how many tokens
    it fired on; `pre_activation`: their weighted mean (= the sum of the parts)."""

    feature: int
    layer: int
    heads: torch.Tensor
    neurons: torch.Tensor
    embedding: float
    rest: float
    pre_activation: float
    tokens: int

    def top_heads(self, count: int = 5) -> list[tuple[int, int, float]]:
        order = self.heads.abs().flatten().argsort(descending=True)[:count]
        heads = self.heads.shape[1]
        return [(int(i) // heads, int(i) % heads, float(self.heads.flatten()[i])) for i in order]

    def top_neurons(self, count: int = 5) -> list[tuple[int, int, float]]:
        order = self.neurons.abs().flatten().argsort(descending=True)[:count]
        width = self.neurons.shape[1]
        return [(int(i) // width, int(i) % width, float(self.neurons.flatten()[i])) for i in order]


@torch.no_grad()
def pre_activation_parts(model: ClipModel, sae: SparseAutoencoder, images, feature: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feature `feature`'s pre-activation at every token split over the stream's parts: (heads `[B, l + 1, H, T]`,
    neurons `[B, l + 1, N, T]`, embedding layer `[B, T]`, rest `[B, T]`, pre-activation `[B, T]`); they add up to
    it exactly (the SAE's input normalisation is linear at this input: a scale, or a norm's fixed statistics)."""
    tower = model.tower
    layer = sae.config.layer
    x = tower.embed(model.preprocess_images(images)).float()
    read = sae.W_enc[:, feature].detach().float().to(x.device)  # [W]
    if sae.config.normalisation == "layer_norm":
        read = read - read.mean()  # the norm's centring, applied to the read instead of the stream
    embedding, heads, neurons = x @ read, [], []
    for index in range(layer + 1):
        q, k, v = tower.qkv(index, x)
        mixed = tower.attend(index, q, k, v)
        through = tower.out_maps(index).float() @ read  # [H, hd]
        part = torch.einsum("bhtk,hk->bht", mixed.float(), through)
        scale = tower.out_scale(index, mixed)
        heads.append(part if scale is None else part * scale[:, None, :])
        x = x + tower.heads_output(index, mixed)
        neurons.append((tower.mlp_neurons(index, x).float() * (tower.mlp_writes(index).float() @ read)).transpose(1, 2))
        x = x + tower.mlp(index, x)
    u, _, scale = sae.normalised(x.cpu())
    per_token = scale.expand(*x.shape[:2], 1)[..., 0].to(x.device)  # [B, T]
    pre = sae.pre_activations(u)[..., feature].to(x.device)
    heads = torch.stack(heads, dim=1) * per_token[:, None, None, :]
    neurons = torch.stack(neurons, dim=1) * per_token[:, None, None, :]
    embedding = embedding * per_token
    rest = pre - heads.sum(dim=(1, 2)) - neurons.sum(dim=(1, 2)) - embedding
    return heads, neurons, embedding, rest, pre


@torch.no_grad()
def feature_writers(model: ClipModel, sae: SparseAutoencoder, images, feature: int) -> FeatureWriters:
    """`FeatureWriters` of `feature` over `images` (its top images, say), on the tokens the SAE reads."""
    heads, neurons, embedding, rest, pre = pre_activation_parts(model, sae, images, feature)
    codes = sae.activate(sae.pre_activations(sae.normalised(
        token_states(model, images, sae.config.layer).cpu())[0]))[..., feature].to(pre.device)  # [B, T]
    weights = torch.zeros_like(codes)
    choice = _token_choice(model, sae)
    weights[:, choice] = codes[:, choice]
    total = weights.sum().clamp(min=1e-12)

    def mean(values: torch.Tensor) -> torch.Tensor:  # [B, ..., T] -> [...], weighted by the activation
        return torch.einsum("b...t,bt->...", values, weights) / total

    return FeatureWriters(feature, sae.config.layer, mean(heads).cpu(), mean(neurons).cpu(), float(mean(embedding)),
                          float(mean(rest)), float(mean(pre)), int((weights > 0).sum()))


SAES_KEPT = 4  # SAEs (with their atlases) kept loaded; a ViT-B one is 75 MB
_kept = LoadedFiles(SAES_KEPT)  # by their folder's sae.json, loaded again when it or atlas.json changes


def stored_sae(model: ClipModel, layer: int, folder: str | Path | None = None
               ) -> tuple[SparseAutoencoder, FeatureAtlas | None]:
    """The SAE (and its atlas, when there is one) of the stream after block `layer` in the model's folder (or in
    the model folder `folder`): read once and kept while its files stay the same (`SAES_KEPT` at most)."""
    from .bundles import model_folder

    folder = features_folder(folder or model_folder(model), layer_index(layer, model.geometry.layers, model.label))

    def load() -> tuple[SparseAutoencoder, FeatureAtlas | None]:
        sae, manifest = SparseAutoencoder.load(folder)
        if manifest.get("weights_sha256") not in (None, model.weights_hash):
            raise InterpretError(f"The SAE in {folder} was trained on other weights than {model.label}'s.")
        sae.report = manifest.get("report")  # how it was trained and how well it reconstructs (trained here)
        try:
            return sae, FeatureAtlas.load(folder)
        except InterpretError:
            return sae, None

    return _kept.get(folder / SAE_MANIFEST, load, also=[folder / ATLAS_MANIFEST])


# --- SAEs others trained: ViT-Prisma's and saev's checkpoints ------------------------------------------------------

def model_names(model: ClipModel) -> set[str]:
    """The names a checkpoint may give `model` by: its label, its open_clip name (and tag), and its weights' Hugging
    Face id as ViT-Prisma writes it ('open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K')."""
    import open_clip

    names = {model.label, model.name, f"{model.name}/{model.pretrained}", f"{model.name}:{model.pretrained}"}
    if model.pretrained:
        try:
            hub = (open_clip.get_pretrained_cfg(model.name, model.pretrained) or {}).get("hf_hub", "")
        except Exception:  # noqa: BLE001  (an unknown tag: a local checkpoint file)
            hub = ""
        if hub:
            names |= {hub.rstrip("/"), f"open-clip:{hub.rstrip('/')}", f"hf-hub:{hub.rstrip('/')}"}
    return names


def load_pretrained_sae(source: str | Path, model: ClipModel, layer: int | None = None) -> SparseAutoencoder:
    """An SAE trained elsewhere, from a local folder or `hf://ORG/REPO[/SUBFOLDER]` (fetched with huggingface_hub
    into the cache under INTERPRET_HOME): ViT-Prisma's (`weights.pt` + `config.json`: `hook_point`
    'blocks.L.hook_resid_post', its `normalize_activations` and activation) or saev's (`sae.pt`: a JSON header line,
    then the state dict; its layer from `config.json` beside it (`train_data.layer`) or from `layer`). Refused with a
    message when it reads another hook (an MLP's output, attention), another model, another width or other tokens
    (the class token alone); weights are read without pickle (`torch.load(weights_only=True)`)."""
    folder = _fetched(str(source))
    if (folder / "weights.pt").is_file() and (folder / "config.json").is_file():
        return _prisma(folder, model)
    checkpoint = folder / "sae.pt" if (folder / "sae.pt").is_file() else None
    if checkpoint is None and folder.is_file() and folder.suffix == ".pt":
        checkpoint, folder = folder, folder.parent
    if checkpoint is not None:
        return _saev(checkpoint, folder, model, layer)
    raise InterpretError(f"{source} holds no SAE this app reads: ViT-Prisma's weights.pt with config.json, or "
                         "saev's sae.pt.")


def _fetched(source: str) -> Path:
    if not source.startswith("hf://"):
        path = Path(source)
        if not path.exists():
            raise InterpretError(f"No SAE at {source}.")
        return path
    from huggingface_hub import snapshot_download

    from .paths import home

    parts = source.removeprefix("hf://").strip("/").split("/")
    if len(parts) < 2:
        raise InterpretError(f"An SAE on the hub is hf://ORG/REPO[/SUBFOLDER], not {source}.")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        local = snapshot_download(repo, allow_patterns=[f"{sub}/*" if sub else "*"], cache_dir=home() / "hub")
    except Exception as error:  # noqa: BLE001  (no network, no such repository)
        raise InterpretError(f"Could not fetch {source} from the Hugging Face hub: {error}") from None
    return Path(local) / sub


def _state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (pickled objects, a damaged file)
        raise InterpretError(f"{path.name} could not be read as plain tensors ({str(error)[:200]}).") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not {"W_enc", "W_dec", "b_enc", "b_dec"} <= set(state):
        raise InterpretError(f"{path.name} does not hold W_enc, W_dec, b_enc and b_dec.")
    return state


def _checked(model: ClipModel, width: int, named: str | None, where: str) -> None:
    if width != model.geometry.width:
        raise InterpretError(f"{where} reads {width}-wide states; {model.label}'s stream is {model.geometry.width} "
                             "wide: it was trained on another model.")
    if named and named not in model_names(model):
        raise InterpretError(f"{where} was trained on {named}, not on {model.label}.")


def _prisma(folder: Path, model: ClipModel) -> SparseAutoencoder:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise InterpretError(f"{folder / 'config.json'} cannot be read ({error}).") from None
    layer = config.get("hook_point_layer")
    layer = layer[0] if isinstance(layer, list) and len(layer) == 1 else layer
    hook = config.get("hook_point") or f"blocks.{layer}.{config.get('layer_subtype', 'hook_resid_post')}"
    if not isinstance(layer, int) or hook != f"blocks.{layer}.hook_resid_post":
        raise InterpretError(f"This ViT-Prisma SAE reads {hook}; only SAEs of the stream after a block "
                             "(blocks.L.hook_resid_post) are read here.")
    if config.get("cls_token_only") or config.get("hook_point_head_index") is not None:
        raise InterpretError("This ViT-Prisma SAE reads the class token alone (or one head); only SAEs of every "
                             "token or of the patches are read here.")
    state = _state_dict(folder / "weights.pt")
    width = int(config.get("d_in", state["W_enc"].shape[0]))
    _checked(model, width, config.get("model_name"), "This ViT-Prisma SAE")
    kind = config.get("activation_fn_str", "relu")
    if kind not in ("relu", "topk"):
        raise InterpretError(f"This ViT-Prisma SAE's activation '{kind}' is not read here (relu, topk).")
    normalisation = config.get("normalize_activations") or "none"
    if normalisation not in ("none", "layer_norm", "constant_norm_rescale"):
        raise InterpretError(f"This ViT-Prisma SAE normalises its input with '{normalisation}', not read here.")
    sae = SparseAutoencoder(SaeConfig(
        width, int(state["W_enc"].shape[1]), layer_index(layer, model.geometry.layers, model.label), kind,
        int((config.get("activation_fn_kwargs") or {}).get("k", 32)), True, normalisation, 1.0,
        "patches" if config.get("use_patches_only") else "all", "ViT-Prisma"))
    sae.load_state_dict({name: state[name].float() for name in ("W_enc", "b_enc", "W_dec", "b_dec")})
    return sae.eval()


def _saev(checkpoint: Path, folder: Path, model: ClipModel, layer: int | None) -> SparseAutoencoder:
    import io

    try:
        with checkpoint.open("rb") as stream:
            header = json.loads(stream.readline())
            payload = stream.read()
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise InterpretError(f"{checkpoint.name} is not a saev checkpoint (a JSON header line, then tensors): "
                             f"{str(error)[:200]}") from None
    config = header.get("cfg", header)
    width = int(config.get("d_model", config.get("d_vit", state["W_enc"].shape[0])))
    activation = config.get("activation", {})
    key = activation.get("key", "relu") if isinstance(activation, dict) else str(header.get("cls", "relu")).lower()
    if key not in ("top-k", "topk", "relu"):
        raise InterpretError(f"This saev SAE's activation '{key}' is not read here (top-k, relu).")
    training = {}
    if (folder / "config.json").is_file():
        try:
            training = json.loads((folder / "config.json").read_text()).get("train_data", {})
        except (OSError, ValueError):
            training = {}
    trained_layer = training.get("layer")
    if trained_layer is not None and layer is not None and trained_layer != layer:
        raise InterpretError(f"This saev SAE was trained on layer {trained_layer}, not {layer}.")
    chosen = trained_layer if trained_layer is not None else layer
    if not isinstance(chosen, int):
        raise InterpretError("This saev checkpoint does not say its layer (no config.json beside it with "
                             "train_data.layer): give the layer it was trained on.")
    if training.get("tokens", "content") == "special":
        raise InterpretError("This saev SAE reads the special tokens (the class token) alone; not read here.")
    _checked(model, width, None, "This saev SAE")
    sae = SparseAutoencoder(SaeConfig(
        width, int(state["W_enc"].shape[1]), layer_index(chosen, model.geometry.layers, model.label),
        "topk" if key in ("top-k", "topk") else "relu", int(activation.get("top_k", 32)) if isinstance(
            activation, dict) else 32, False, "none", 1.0, "all" if training.get("tokens") == "all" else "patches",
        "saev"))
    sae.load_state_dict({name: state[name].float() for name in ("W_enc", "b_enc", "W_dec", "b_dec")})
    return sae.eval()


# --- the whole of it: train and describe, an image's features -----------------------------------------------------

TOY_TRAINING_TOKENS = 1_000_000  # token states the toy models' SAEs train on (about 15,000 fresh scenes)
MIN_EXPLAINED_VARIANCE = 0.5  # an SAE that explains less of held-out states is no model's default
FEW_TOKENS_PER_FEATURE = 10  # an SAE trained on fewer tokens than this a feature: its features say little


def provenance(sae: SparseAutoencoder) -> tuple[str, str | None]:
    """(what an SAE was trained on and how well it reconstructs, in words; a warning when that is too little to
    trust its features, or None)."""
    report = getattr(sae, "report", None)
    if not report:
        return sae.config.source, None
    tokens, variance = int(report.get("tokens", 0)), float(report.get("explained_variance", 0.0))
    said = (f"trained here on {tokens:,} tokens; it explains {variance:.2f} of the variance of held-out token "
            "states")
    if tokens < FEW_TOKENS_PER_FEATURE * sae.config.features:
        return said, (f"This SAE was trained on {tokens:,} tokens for {sae.config.features:,} features (fewer than "
                      f"{FEW_TOKENS_PER_FEATURE} a feature): its features and their names say little; build it from "
                      "more images.")
    if variance < MIN_EXPLAINED_VARIANCE:
        return said, f"This SAE explains only {variance:.2f} of the variance: its features say little."
    return said, None


def default_feature_layer(model: ClipModel) -> int:
    """The block whose output an SAE reads unless told: the middle of the tower (the toy's block 1 of 4)."""
    return max(0, model.geometry.layers // 2 - 1)


def describe_features(model: ClipModel, sae: SparseAutoencoder, images, bank, engine=None,
                      progress: bool = True, batch_size: int = 32) -> FeatureAtlas:
    """The atlas of `sae` over the images below `images`, its features named from `bank`."""
    return name_features(model, feature_atlas(model, sae, images, batch_size=batch_size, engine=engine,
                                              progress=progress), bank, batch_size)


def train_features(model: ClipModel, layer: int, images: str | Path | None = None, tokens: int | None = None,
                   k: int = 32, features: int | None = None, activation: str = "topk", bank: str | None = None,
                   out: str | Path | None = None, engine=None, progress: bool = True,
                   on_step: Callable[[int, float], None] | None = None, batch_size: int = 32,
                   replace: bool = False) -> tuple[SaeReport, Path]:
    """Train an SAE on the stream after block `layer` (the images below `images`, every token once, or, for the toy
    models without `images`, `TOY_TRAINING_TOKENS` of fresh toy scenes), report its reconstruction on other images
    (1,000 other toy scenes, or the images' last tenth), describe its features over the model's database images (the
    toy's scenes, or `images`) with `bank`, and store both in `out` (default: the model's folder). An SAE stored
    there already is replaced only with `replace` (refused before any work otherwise); one whose explained variance
    on the held-out tokens is below `MIN_EXPLAINED_VARIANCE` is not stored as the model's own (only where `out`
    names). Returns (the report, the folder)."""
    from .banks import bank_named, default_bank
    from .bundles import model_folder
    from .engines import LocalEngine, run_blocks
    from .images import list_images
    from .paths import is_toy
    from .toy.examples import draw_toy_database

    layer = layer_index(layer, model.geometry.layers, model.label)
    width = model.geometry.width
    folder = features_folder(out or model_folder(model), layer)
    if (folder / SAE_MANIFEST).is_file() and not replace:
        raise InterpretError(f"An SAE of block {layer} is stored in {folder} already; give another out folder, or "
                             "replace=True (--replace) to train over it.")
    if images is None:
        if not is_toy(model.name):
            raise InterpretError("Give the images to train the SAE on (a folder).")
        tokens = tokens or TOY_TRAINING_TOKENS
        stream = toy_token_blocks(model, layer, -(-tokens // model.geometry.tokens))
        described = draw_toy_database(model.index_dir / "images")
        held_out = [torch.from_numpy(block) for block in toy_token_blocks(model, layer, 1000, seed=3_900_000)]
    else:
        root = Path(images).resolve()
        names = [path.relative_to(root).as_posix() for path in list_images(root)]
        held_out = []
        stream = _held_out_of(run_blocks(engine or LocalEngine(), model, root, names, TokenStatesTask(layer),
                                         batch_size, images_within(model, width), progress=False), held_out)
        described = root
    sae, training = train_sae(stream, width, layer, features, activation, k, tokens=tokens, progress=progress,
                              on_step=on_step)
    held_out = [states.reshape(-1, width) for states in held_out if len(states)]
    report = training if not held_out else dataclasses.replace(evaluate_sae(sae, held_out), tokens=training.tokens,
                                                               seconds=training.seconds)
    if out is None and report.explained_variance < MIN_EXPLAINED_VARIANCE:
        raise InterpretError(f"This SAE explains {report.explained_variance:.2f} of the variance of held-out token "
                             f"states (below {MIN_EXPLAINED_VARIANCE}): not stored as {model.label}'s SAE of block "
                             f"{layer}. Train on more tokens or images, or give an out folder to keep it anyway.")
    atlas = describe_features(model, sae, described, bank_named(bank or default_bank(model.name)), engine,
                              progress, batch_size)
    sae.save(folder, model=model.label, weights_sha256=model.weights_hash, report=dataclasses.asdict(report))
    atlas.save(folder)
    return report, folder


def _held_out_of(blocks, held_out: list) -> Iterator[torch.Tensor]:
    """The token states `[n, T, W]` of `blocks` (`TokenStatesTask`'s), less every `HOLD_OUT_EVERY`-th image among
    those that were read, which go to `held_out` instead: the held-out images are chosen among what could be read
    (unreadable files anywhere in the set leave it whole)."""
    seen = 0
    for block in blocks:
        states = torch.from_numpy(block.arrays["states"])
        chosen = torch.arange(seen, seen + len(states)) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
        seen += len(states)
        held_out.append(states[chosen])
        if (~chosen).any():
            yield states[~chosen]


@dataclass
class FeatureReport:
    """One image's features: the `top` that fire most (their largest activation on a patch, `peaks`), how many
    patches each fires on, their maps `[n, grid_h, grid_w]`, their names (from the atlas, or None), and with a
    caption, the cosine score (`cosine`) and its change when each is removed from every token (`changes`)."""

    layer: int
    features: list[int]
    peaks: torch.Tensor
    patches: torch.Tensor
    maps: torch.Tensor
    names: list[str] | None
    caption: str | None
    cosine: float | None
    changes: torch.Tensor | None
    warnings: list[str]


def explain_features(model: ClipModel, image, caption: str | None = None, layer: int | None = None, top: int = 10,
                     sae: SparseAutoencoder | None = None, atlas: FeatureAtlas | None = None) -> FeatureReport:
    """The `top` features of the SAE on block `layer` (default: the model's stored one) that fire most on `image`,
    where, and (with `caption`) what removing each from the forward pass does to the image-caption score."""
    from .images import load_image

    if sae is None:
        sae, atlas = stored_sae(model, default_feature_layer(model) if layer is None else layer)
    picture = load_image(image)
    states, codes = image_features(model, sae, [picture])
    prefix = model.geometry.prefix
    patches = codes[0, prefix:]  # [P, F]
    peaks = patches.amax(dim=0)
    chosen = [int(f) for f in peaks.argsort(descending=True)[:top] if peaks[f] > 0]
    warnings, cosine, changes = [], None, None
    kept = None
    if caption:
        encoded = model.tokenize(caption)
        warnings, kept = encoded.warnings(), encoded.kept[0]
        base, changed = intervened_scores(model, sae, [picture], model.embed_tokens(encoded), chosen)
        cosine = float(base[0, 0])
        changes = (changed[:, 0, 0] - base[0, 0]) if chosen else torch.zeros(0)
    names = [atlas.labels[f][0] for f in chosen] if atlas is not None and atlas.labels else None
    return FeatureReport(sae.config.layer, chosen, peaks[chosen], (patches[:, chosen] > 0).sum(dim=0),
                         patches[:, chosen].T.reshape(len(chosen), *model.geometry.grid), names, kept, cosine,
                         changes, warnings)
