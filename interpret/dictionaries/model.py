"""A dictionary: an encoder, a sparse activation and a decoder. Two kinds read a tower:

- an **SAE** reads the residual stream after block `layer` and reconstructs it;
- a **transcoder** reads what block `layer`'s MLP reads (its norm's output, `VisionTower.mlp_norm`: the MLP's own
  input, so the transcoder stands in for exactly the function the MLP computes, and in the local replacement model,
  where the norm's statistics are fixed, it is linear in the stream) and predicts what the MLP writes into the stream
  (LayerScale included), optionally with a linear skip connection `W_skip` (Paulo et al. 2025).

With the input `u = norm(x)` (a fixed scale here; a loaded dictionary's own normalisation), the features are
`f = act(u W_enc + b_enc)`, or `act((u - b_dec) W_enc + b_enc)` for SAEs that subtract their decoder bias first
(ViT-Prisma's, SAELens's, ours); `act` is TopK (the k largest pre-activations, ReLU'd), ReLU or JumpReLU (Gemma
Scope's: a pre-activation passes where it exceeds its feature's `threshold`). The output is `f W_dec + b_dec (+ u
W_skip^T)`, in the normalised space, then undone to the stream's units. `Dictionary` holds every kind, so a loaded
checkpoint encodes exactly as its authors' code.
"""
from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InterpretError
from ..integrity import write_json_atomic

SAE_FILE, SAE_MANIFEST = "sae.safetensors", "sae.json"  # a dictionary's weights and its manifest, in its folder
KINDS = ("sae", "transcoder")
STREAMS = ("sae", "transcoder", "readout")  # what a dictionary reads: a block's output stream, an MLP, the readout
ACTIVATIONS = ("topk", "relu", "jumprelu")


@dataclass
class DictionaryConfig:
    """A dictionary's shape and kind. `width`: the width it reads (d_in); `features`: d_sae; `layer`: the block
    whose output stream (SAE) or MLP (transcoder) it reads; `kind`: "sae" or "transcoder"; `activation`: "topk",
    "relu" or "jumprelu"; `k`: TopK's k; `subtract_decoder_bias`: an SAE encodes `u - b_dec` (Prisma, ours) or `u`
    (saev); `normalisation`: "scale" (inputs times `input_scale`, outputs times `output_scale`: ours), "layer_norm"
    or "constant_norm_rescale" (Prisma's and SAELens's run-time norms), "none"; `skip`: a transcoder's linear skip
    connection; `tokens`: "all", "patches" or "readout" (an SAE of what the readout's last stage reads, one
    vector an image: the class token before the final norm, an attention pooler's output); `source`: where it came from ("trained here", "ViT-Prisma", "saev",
    "SAELens"); `threshold`: a TopK dictionary's typical smallest active pre-activation (an estimate kept in
    training: it turns TopK into JumpReLU for formats without TopK)."""

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
    kind: str = "sae"
    output_scale: float | None = None  # None: the input's (an SAE's output is its input)
    skip: bool = False
    threshold: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InterpretError(f"Unknown dictionary kind '{self.kind}': 'sae' or 'transcoder'.")
        if self.activation not in ACTIVATIONS:
            raise InterpretError(f"Unknown activation '{self.activation}': choose 'topk', 'relu' or 'jumprelu'.")
        if self.kind == "transcoder" and self.subtract_decoder_bias:
            self.subtract_decoder_bias = False  # its decoder bias lives in the output's space

    @property
    def target_scale(self) -> float:
        """What the output is scaled by in the normalised space ("scale"): a transcoder's own, an SAE's input's."""
        return (self.output_scale or self.input_scale) if self.kind == "transcoder" else self.input_scale

    @property
    def stream(self) -> str:
        """What it reads, one of `STREAMS`."""
        return "readout" if self.tokens == "readout" else self.kind

    @property
    def reads(self) -> str:
        """Where it reads, in words."""
        return (f"the stream after block {self.layer}" if self.kind == "sae" else
                f"block {self.layer}'s MLP input (its norm's output)")

    @property
    def name(self) -> str:
        """'SAE of block 3', 'transcoder of MLP 3', 'SAE of the readout'."""
        return {"sae": f"SAE of block {self.layer}", "transcoder": f"transcoder of MLP {self.layer}",
                "readout": "SAE of the readout"}[self.stream]


class Dictionary(torch.nn.Module):
    """`W_enc` `[W, F]`, `b_enc` `[F]`, `W_dec` `[F, W]` (unit rows once trained here), `b_dec` `[W]`; a
    transcoder with a skip connection also `W_skip` `[W, W]` (out x in, as SAELens); JumpReLU `threshold` `[F]`."""

    def __init__(self, config: DictionaryConfig):
        super().__init__()
        self.config = config
        self.W_enc = torch.nn.Parameter(torch.zeros(config.width, config.features))
        self.b_enc = torch.nn.Parameter(torch.zeros(config.features))
        self.W_dec = torch.nn.Parameter(torch.zeros(config.features, config.width))
        self.b_dec = torch.nn.Parameter(torch.zeros(config.width))
        if config.skip:
            self.W_skip = torch.nn.Parameter(torch.zeros(config.width, config.width))
        if config.activation == "jumprelu":
            self.threshold = torch.nn.Parameter(torch.zeros(config.features))

    @property
    def is_transcoder(self) -> bool:
        return self.config.kind == "transcoder"

    # --- the input as the dictionary sees it, and its output in the stream's units -------------------------
    def normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`x` `[..., W]` -> (u, shift, scale) with `u = (x - shift) * scale` (shift and scale per token, or
        constants): the dictionary's input."""
        kind = self.config.normalisation
        if kind == "scale":
            return x * self.config.input_scale, x.new_zeros(()), x.new_tensor(self.config.input_scale)
        if kind == "none":
            return x, x.new_zeros(()), x.new_ones(())
        if kind == "layer_norm":  # Prisma's and SAELens's: (x - mean) / (std + 1e-5), std with Bessel's correction
            mean = x.mean(dim=-1, keepdim=True)
            scale = 1 / (x.std(dim=-1, keepdim=True) + 1e-5)
            return (x - mean) * scale, mean, scale
        if kind == "constant_norm_rescale":  # each token scaled to norm sqrt(width)
            scale = self.config.width ** 0.5 / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            return x * scale, x.new_zeros(()), scale
        raise InterpretError(f"Unknown dictionary input normalisation '{kind}'.")

    def output_scale(self, scale: torch.Tensor) -> torch.Tensor:
        """What the output is divided by to come back to the stream's units, given the input's `scale` (an SAE's
        output is in its input's units; a transcoder's has its own constant)."""
        if self.is_transcoder and self.config.normalisation == "scale":
            return scale.new_tensor(self.config.target_scale)
        return scale

    def pre_activations(self, u: torch.Tensor) -> torch.Tensor:
        """`[..., F]`: the encoder's pre-activations of a normalised input `u` `[..., W]`."""
        if self.config.subtract_decoder_bias:
            u = u - self.b_dec
        return u @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """TopK (the k largest pre-activations, the others zero; negative ones zero too), ReLU or JumpReLU."""
        if self.config.activation == "relu":
            return F.relu(pre)
        if self.config.activation == "jumprelu":
            return pre * (pre > self.threshold)
        values, indices = pre.topk(min(self.config.k, pre.shape[-1]), dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`[..., F]`: the features of inputs `x` `[..., W]` (as they are: `encode` normalises them)."""
        return self.activate(self.pre_activations(self.normalised(x)[0]))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """`[..., W]` in the normalised space, the skip connection aside."""
        return features @ self.W_dec + self.b_dec

    def skipped(self, u: torch.Tensor) -> torch.Tensor | float:
        """The skip connection's part of the output (normalised space), or 0."""
        return u @ self.W_skip.T if self.config.skip else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The output for inputs `x` `[..., W]`, in the stream's units: an SAE's reconstruction of `x`, a
        transcoder's prediction of the MLP's write."""
        u, shift, scale = self.normalised(x)
        out = self.decode(self.activate(self.pre_activations(u))) + self.skipped(u)
        if self.is_transcoder:
            return out / self.output_scale(scale)
        return out / scale + shift

    def write_scale(self, x: torch.Tensor) -> torch.Tensor:
        """`[..., 1]` (or a scalar): a feature writes `activation x W_dec[f] / write_scale` into the stream at a
        token whose input is `x`."""
        return self.output_scale(self.normalised(x)[2])

    @torch.no_grad()
    def unit_decoder(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp(min=1e-12)

    @torch.no_grad()
    def remove_parallel_gradients(self) -> None:
        """Take out of W_dec's gradient the part along each row (unit rows stay unit: Anthropic's advice)."""
        if self.W_dec.grad is not None:
            along = (self.W_dec.grad * self.W_dec.data).sum(dim=1, keepdim=True)
            self.W_dec.grad -= along * self.W_dec.data

    @torch.no_grad()
    def folded(self) -> "Dictionary":
        """The same function with the constant scales folded into the weights (`normalisation` "none"), as SAELens
        stores a dictionary: `W_enc` times the input scale, the decoder (and its bias) divided by the output's, the
        skip by the ratio. A run-time normalisation (layer norm) stays as it is."""
        if self.config.normalisation != "scale":
            return self
        into, out = self.config.input_scale, self.config.target_scale
        config = dataclasses.replace(self.config, normalisation="none", input_scale=1.0, output_scale=None)
        folded = Dictionary(config)
        folded.load_state_dict(self.state_dict())
        folded.W_enc.mul_(into)
        folded.W_dec.div_(out)
        folded.b_dec.div_(out)
        if config.skip:
            folded.W_skip.mul_(into / out)
        return folded.eval()

    # --- storage ------------------------------------------------------------------------------------------
    def save(self, folder: Path, dtype: torch.dtype = torch.float32, **extra) -> Path:
        """`folder/sae.safetensors` and `sae.json` (the config, and `extra`: model, metrics...), written whole."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"{SAE_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        save_file({name: tensor.detach().to(dtype).contiguous().cpu() for name, tensor in self.state_dict().items()},
                  str(temporary))
        os.replace(temporary, folder / SAE_FILE)
        write_json_atomic(folder / SAE_MANIFEST, {"config": dataclasses.asdict(self.config), **extra})
        return folder

    @classmethod
    def load(cls, folder: Path) -> tuple["Dictionary", dict]:
        """A dictionary `save` wrote, and its manifest."""
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            manifest = json.loads((folder / SAE_MANIFEST).read_text())
            dictionary = cls(DictionaryConfig(**manifest["config"]))
            dictionary.load_state_dict({name: tensor.float() for name, tensor in
                                        load_file(str(folder / SAE_FILE)).items()})
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            raise InterpretError(f"No dictionary in {folder} ({error}).") from None
        return dictionary.eval(), manifest
