"""Training dictionaries: SAEs and transcoders, one layer or many from the same stream of token states.

The recipe (saev's current one for SAEs, the same for transcoders): TopK k = 32 with the AuxK loss for dead features
(Gao et al. 2024: the top 512 dead latents reconstruct the residual, weight 1/32), decoder rows kept at unit norm
(their parallel gradient removed), the encoder and decoder initialised from data points (saev's "datapoint" init;
a transcoder pairs each feature's encoder column with an input and its decoder row with that token's MLP output),
the encoder's scale fitted to the first minibatch in least squares, the decoder bias at the data's geometric median
(or mean), Adam at 4e-4 with a warm-up and gradient clipping. Or ReLU + L1 (ViT-Prisma's), or JumpReLU (Gemma
Scope's: thresholds learned through a straight-through estimator with a rectangle kernel, an L0 penalty). A
transcoder may have a linear skip connection (`skip`, zero at the start as SAELens's). Inputs and targets are each
scaled by one constant so that their mean norm is sqrt(width) (kept in the config).

Many layers train together (`train_dictionaries`): each block of the stream holds every layer's rows from one
forward pass; each layer has its own buffer and trainer.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from ..errors import InterpretError
from ..jobs import JobBar
from .model import Dictionary, DictionaryConfig
from .streams import ActivationBuffer

BUFFER_BYTES = 512 * 2 ** 20  # the shuffle buffers of all the layers trained together, at most
BUFFER_ROWS = 2 ** 16  # a layer's buffer, at most


@dataclass
class DictionaryReport:
    """How well a dictionary reconstructs (SAE) or predicts (transcoder) held-out rows: explained variance (1 -
    squared error / the target's variance about its mean; 1 - FVU), L0 (features active per token), dead features
    (active on no held-out token), and the training's tokens, seconds and tokens per second."""

    explained_variance: float
    l0: float
    dead: int
    features: int
    tokens: int = 0
    seconds: float = 0.0

    @property
    def fvu(self) -> float:
        """The fraction of the target's variance unexplained."""
        return 1 - self.explained_variance

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"explained variance {self.explained_variance:.3f} (FVU {self.fvu:.3f}), L0 {self.l0:.1f}, dead "
                f"{self.dead} of {self.features}" + (f"; {self.tokens:,} tokens in {self.seconds:.0f} s "
                                                     f"({self.tokens_per_second:,.0f}/s)" if self.tokens else ""))


def geometric_median(points: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """`[W]`: the point of least summed distance to `points` `[n, W]` (Weiszfeld's iterations from the mean)."""
    median = points.mean(dim=0)
    for _ in range(iterations):
        weights = 1 / (points - median).norm(dim=1).clamp(min=1e-8)
        median = (weights[:, None] * points).sum(dim=0) / weights.sum()
    return median


def split_rows(rows: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A training row -> (input, target): an SAE's target is its input; a transcoder's row is input, then output."""
    return rows.chunk(2, dim=-1) if kind == "transcoder" else (rows, rows)


class _Rectangle(torch.autograd.Function):
    """JumpReLU's straight-through estimators (Rajamanoharan et al. 2024): forward the step `H(pre - threshold)`
    (times `pre` for the activation); backward, the threshold's gradient through a rectangle kernel of `bandwidth`."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth, times_pre):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth, ctx.times_pre = bandwidth, times_pre
        step = (pre > threshold).to(pre)
        return pre * step if times_pre else step

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        kernel = ((pre - threshold).abs() < ctx.bandwidth / 2).to(pre) / ctx.bandwidth
        factor = threshold if ctx.times_pre else torch.ones_like(threshold)
        grad_threshold = (-(factor * kernel) * grad).sum(dim=tuple(range(grad.dim() - 1)))
        grad_pre = grad * (pre > threshold).to(pre) if ctx.times_pre else None
        return grad_pre, grad_threshold, None, None


class DictionaryTrainer:
    """One dictionary in training: `step(rows)` on each minibatch (`[b, W]` for an SAE, `[b, 2W]` for a
    transcoder); `result()` the dictionary (eval mode, on the CPU). Initialised from its first minibatch. `kind`:
    "sae", "transcoder" or "readout" (an SAE of the readout's input)."""

    def __init__(self, kind: str, width: int, layer: int, features: int | None = None, activation: str = "topk",
                 k: int = 32, l1: float = 4e-4, learning_rate: float = 4e-4, warmup: int = 500,
                 auxiliary_k: int = 512, auxiliary_weight: float = 1 / 32, dead_after: int = 2 ** 18,
                 decoder_bias: str = "geometric_median", skip: bool = False, l0_coefficient: float = 2e-3,
                 bandwidth: float = 1e-2, seed: int = 0, device: str | None = None):
        if decoder_bias not in ("geometric_median", "mean"):
            raise InterpretError(f"Unknown decoder bias init '{decoder_bias}': 'geometric_median' or 'mean'.")
        if skip and kind != "transcoder":
            raise InterpretError("Only a transcoder has a skip connection.")
        self.kind, self.width, self.layer = "sae" if kind == "readout" else kind, width, layer
        self.config = DictionaryConfig(width, features or 16 * width, layer, activation, k, self.kind == "sae",
                                       "scale", tokens="readout" if kind == "readout" else "all", kind=self.kind,
                                       skip=skip)
        self.l1, self.learning_rate, self.warmup = l1, learning_rate, warmup
        self.auxiliary_k, self.auxiliary_weight, self.dead_after = auxiliary_k, auxiliary_weight, dead_after
        self.decoder_bias, self.l0_coefficient, self.bandwidth = decoder_bias, l0_coefficient, bandwidth
        self.seed = seed
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dictionary: Dictionary | None = None
        self.first: torch.Tensor | None = None
        self.used = 0
        self.threshold_sum, self.threshold_count = 0.0, 0

    def _start(self, rows: torch.Tensor) -> None:
        torch.manual_seed(self.seed)
        inputs, targets = split_rows(rows, self.kind)
        into = float(self.width ** 0.5 / inputs.norm(dim=1).mean().clamp(min=1e-12))
        out = float(self.width ** 0.5 / targets.norm(dim=1).mean().clamp(min=1e-12))
        self.config = dataclasses.replace(self.config, input_scale=into,
                                          output_scale=out if self.kind == "transcoder" else None)
        self.dictionary = Dictionary(self.config)
        _initialise(self.dictionary, inputs * into, targets * out if self.kind == "transcoder" else inputs * into,
                    self.decoder_bias)
        self.dictionary.to(self.device)
        self.optimiser = torch.optim.Adam(self.dictionary.parameters(), lr=self.learning_rate)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimiser,
                                                          lambda step: min(1.0, (step + 1) / self.warmup))
        self.last_active = torch.zeros(self.config.features, dtype=torch.long, device=self.device)
        self.first = rows

    def step(self, rows: torch.Tensor) -> float:
        """One optimiser step on `rows`; returns the loss."""
        if self.dictionary is None:
            self._start(rows)
        dictionary, config = self.dictionary, self.config
        inputs, targets = split_rows(rows.to(self.device), self.kind)
        u = inputs * config.input_scale
        target = targets * config.target_scale
        pre = dictionary.pre_activations(u)
        if config.activation == "jumprelu":
            codes = _Rectangle.apply(pre, dictionary.threshold, self.bandwidth, True)
        else:
            codes = dictionary.activate(pre)
        prediction = dictionary.decode(codes) + dictionary.skipped(u)
        loss = (prediction - target).pow(2).sum(dim=1).mean()
        if config.activation == "relu":
            loss = loss + self.l1 * codes.abs().sum(dim=1).mean()
        elif config.activation == "jumprelu":
            active = _Rectangle.apply(pre, dictionary.threshold, self.bandwidth, False)
            loss = loss + self.l0_coefficient * active.sum(dim=1).mean()
        else:  # TopK: the smallest of each token's k (a BatchTopK-style threshold, for formats without TopK)
            smallest = codes.detach().masked_fill(codes <= 0, float("inf")).amin(dim=1)
            finite = smallest[torch.isfinite(smallest)]
            self.threshold_sum += float(finite.sum())
            self.threshold_count += len(finite)
        self.used += len(rows)
        self.last_active[(codes > 0).any(dim=0)] = self.used
        dead = (self.used - self.last_active) >= self.dead_after
        if config.activation == "topk" and dead.any():
            residual = (target - prediction).detach()
            dead_pre = pre.masked_fill(~dead, float("-inf"))
            values, indices = dead_pre.topk(min(self.auxiliary_k, int(dead.sum())), dim=1)
            auxiliary = torch.zeros_like(pre).scatter(1, indices, F.relu(values))
            loss = loss + self.auxiliary_weight * (auxiliary @ dictionary.W_dec - residual).pow(2).sum(dim=1).mean()
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        dictionary.remove_parallel_gradients()
        torch.nn.utils.clip_grad_norm_(dictionary.parameters(), 1.0)
        self.optimiser.step()
        self.schedule.step()
        dictionary.unit_decoder()
        if config.activation == "jumprelu":
            with torch.no_grad():
                dictionary.threshold.clamp_(min=0.0)
        return float(loss.detach())

    def result(self) -> Dictionary:
        if self.dictionary is None:
            raise InterpretError(f"No token states to train the {self.kind} of layer {self.layer} on.")
        dictionary = self.dictionary.cpu().eval()
        if self.threshold_count:
            dictionary.config.threshold = self.threshold_sum / self.threshold_count
        return dictionary


@torch.no_grad()
def _initialise(dictionary: Dictionary, inputs: torch.Tensor, targets: torch.Tensor, decoder_bias: str) -> None:
    """saev's datapoint init, in the normalised space: each feature's decoder row a centred target (80 %) blended
    with Kaiming noise, at unit norm; its encoder column the transpose (SAE) or the same token's centred input (a
    transcoder), and the encoder's bias centring the inputs; the decoder bias the targets' geometric median (or
    mean); then the encoder's scale fitted in least squares."""
    config = dictionary.config
    centre = geometric_median(targets) if decoder_bias == "geometric_median" else targets.mean(dim=0)
    chosen = torch.randint(len(targets), (config.features,))
    rows = targets[chosen] - targets.mean(dim=0)
    noise = torch.nn.init.kaiming_uniform_(torch.empty_like(rows))
    dictionary.W_dec.data.copy_(0.8 * rows + 0.2 * noise)
    dictionary.unit_decoder()
    dictionary.b_dec.data.copy_(centre)
    if config.kind == "sae":
        dictionary.W_enc.data.copy_(dictionary.W_dec.data.T)
    else:
        columns = inputs[chosen] - inputs.mean(dim=0)
        columns = 0.8 * columns + 0.2 * torch.nn.init.kaiming_uniform_(torch.empty_like(columns))
        dictionary.W_enc.data.copy_(F.normalize(columns, dim=1).T)
        dictionary.b_enc.data.copy_(-inputs.mean(dim=0) @ dictionary.W_enc.data)
    if config.activation == "jumprelu":
        dictionary.threshold.data.fill_(1e-3)
    # The encoder's scale: data-point rows fire together and strongly (k unit rows each read with the input's whole
    # norm), so the first reconstruction was tens of times too long (explained variance -458 after a short
    # training). The features scale with the encoder (TopK, ReLU and JumpReLU at a zero threshold alike), so the
    # scale that reconstructs the sample best in least squares is one number: the encoder starts there.
    written = dictionary.decode(dictionary.activate(dictionary.pre_activations(inputs))) - dictionary.b_dec
    wanted = targets - dictionary.b_dec
    fit = float((written * wanted).sum() / (written * written).sum().clamp(min=1e-12))
    if fit > 0:
        dictionary.W_enc.data.mul_(fit)
        dictionary.b_enc.data.mul_(fit)


def buffer_rows(row_width: int, layers: int, budget: int = BUFFER_BYTES) -> int:
    """A layer's shuffle buffer when `layers` train together on rows `row_width` wide: `BUFFER_ROWS`, or less so
    that all of them fit in `budget` bytes (at least 4,096 rows)."""
    return max(4096, min(BUFFER_ROWS, budget // max(1, layers * row_width * 4)))


def train_dictionaries(blocks: Iterable[dict], kind: str, width: int, layers: Sequence[int],
                       tokens: int | None = None, batch_size: int = 1024, buffer_size: int | None = None,
                       token_choice: slice | list = slice(None), seed: int = 0, progress: bool = True,
                       on_step: Callable[[int, float], None] | None = None, **options
                       ) -> dict[int, tuple[Dictionary, DictionaryReport]]:
    """Train one dictionary of `kind` ("sae", "transcoder" or "readout") per layer of `layers` on `blocks`, an
    iterable of
    `{layer: [n, T, C]}` (`DictionaryInputsTask`'s, `toy_blocks`): every layer's rows of the same images, from one
    forward pass. Each layer has its own shuffle buffer (`buffer_rows`) and trainer; training stops when the stream
    ends or each layer used `tokens`. `options`: `DictionaryTrainer`'s (features, activation, k, skip, ...).
    Returns {layer: (dictionary, the report of its first minibatch)}; `evaluate` on held-out rows is the fair
    measure."""
    layers = list(layers)
    row = width * (2 if kind == "transcoder" else 1)
    size = buffer_size or buffer_rows(row, len(layers))
    buffers = {layer: ActivationBuffer(size=size, seed=seed + layer, tokens=token_choice, batch_size=batch_size)
               for layer in layers}
    trainers = {layer: DictionaryTrainer(kind, width, layer, seed=seed, **options) for layer in layers}
    started = time.monotonic()
    what = "transcoder" if kind == "transcoder" else "SAE"
    bar = JobBar(total=tokens, desc=f"training {len(layers)} {what}{'s' * (len(layers) > 1)}", unit="token",
                 unit_scale=True, disable=not progress)

    def train(layer: int, batches) -> None:
        for rows in batches:
            if tokens is not None and trainers[layer].used >= tokens:
                return
            loss = trainers[layer].step(rows)
            if layer == layers[0]:
                bar.update(len(rows))
                if on_step is not None:
                    on_step(trainers[layer].used, loss)

    for block in blocks:
        for layer in layers:
            train(layer, buffers[layer].add(buffers[layer].token_rows(block[layer])))
        if tokens is not None and all(trainer.used >= tokens for trainer in trainers.values()):
            break
    for layer in layers:
        train(layer, buffers[layer].drain())
    bar.close()
    seconds = time.monotonic() - started
    results = {}
    for layer, trainer in trainers.items():
        dictionary = trainer.result()
        report = evaluate(dictionary, [trainer.first])
        results[layer] = (dictionary, dataclasses.replace(report, tokens=trainer.used, seconds=seconds))
    return results


def train_sae(blocks: Iterable, width: int, layer: int, features: int | None = None, activation: str = "topk",
              k: int = 32, tokens: int | None = None, batch_size: int = 1024, buffer_size: int = 2 ** 16,
              token_choice: slice | list = slice(None), seed: int = 0, progress: bool = True,
              on_step: Callable[[int, float], None] | None = None, **options) -> tuple[Dictionary, DictionaryReport]:
    """One SAE on the stream after block `layer` from `blocks`, an iterable of `[n, T, W]` arrays (see
    `train_dictionaries`)."""
    return train_dictionaries(({layer: block} for block in blocks), "sae", width, [layer], tokens, batch_size,
                              buffer_size, token_choice, seed, progress, on_step, features=features,
                              activation=activation, k=k, **options)[layer]


@torch.no_grad()
def evaluate(dictionary: Dictionary, batches: Iterable[torch.Tensor]) -> DictionaryReport:
    """Explained variance (1 - FVU), L0 and dead features over rows `[n, C]` (the stream's units; a transcoder's
    rows are input and MLP output side by side)."""
    error = active = count = 0.0
    fired = torch.zeros(dictionary.config.features, dtype=torch.bool)
    sums = []
    for rows in batches:
        inputs, targets = split_rows(rows.float(), dictionary.config.kind)
        codes = dictionary.encode(inputs)
        error += float((dictionary(inputs) - targets).pow(2).sum())
        sums.append((targets.sum(dim=0), (targets * targets).sum(dim=0)))
        active += float((codes > 0).sum())
        count += len(inputs)
        fired |= (codes > 0).any(dim=0)
    if not count:
        raise InterpretError("No token states to evaluate the dictionary on.")
    total = sum(s for s, _ in sums)
    squares = sum(q for _, q in sums)
    variance = float((squares - total * total / count).sum())
    return DictionaryReport(1 - error / max(variance, 1e-12), active / count, int((~fired).sum()),
                            dictionary.config.features)
