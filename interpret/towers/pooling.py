"""Attention-pooled readouts, linearised at each input: what open_clip's CoCa pooler and timm's latent pooler
share (`AttentionPooling`, `PoolParts`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

class AttentionPooling:
    """What the attention-pooled readouts share: one readout channel per pooling head, and the heads folded
    through each channel's map (`_pool_maps`, `[P, W, D]`). A family mixes a subclass in and sets `pooler` (None:
    its fixed-pool readout is used instead)."""

    pooler: torch.nn.Module | None

    @property
    def readout_channels(self) -> int:
        return 1 if self.pooler is None else self.pool_heads

    def pool_parts(self, x: torch.Tensor) -> "PoolParts":
        """The pooler at the final stream `x` `[B, T, W]`: its query, keys, values and attention, in plain
        operations (forward AD; gradients with respect to the attention for the explanation methods)."""
        raise NotImplementedError

    def pooled_embedding(self, parts: "PoolParts") -> torch.Tensor:
        """`[B, D]`: the embedding from the pooler's attention and values."""
        return self.embedding_from_mixed(parts.mixed)

    def embedding_from_mixed(self, mixed: torch.Tensor) -> torch.Tensor:
        """`[B, D]`: the embedding from each pooling head's attention-weighted values `[B, P, hd]` (the rest of
        the pooler, then the readout)."""
        return self.after_pool(self.pool_output(mixed))

    def pool_output(self, mixed: torch.Tensor) -> torch.Tensor:
        """`[B, W]`: the pooler's output (its MLP included, where it has one) from each pooling head's
        attention-weighted values `[B, P, hd]`: what the rest of the readout reads."""
        raise NotImplementedError

    def after_pool(self, output: torch.Tensor) -> torch.Tensor:
        """`[B, W]` the pooler's output -> `[B, D]` the embedding (not normalised)."""
        raise NotImplementedError

    def readout_input(self, x):
        return super().readout_input(x) if self.pooler is None else self.pool_output(self.pool_parts(x).mixed)

    def embedding_from_readout_input(self, readout_input):
        return super().embedding_from_readout_input(readout_input) if self.pooler is None else \
            self.after_pool(readout_input)

    def embedding(self, x):
        if self.pooler is None:
            return super().embedding(x)
        return self.pooled_embedding(self.pool_parts(x))

    @property
    def pool_heads(self) -> int:
        raise NotImplementedError

    def _pool_maps(self) -> torch.Tensor:
        """`[P, W, D]`: how a token's state reaches the embedding through each pooling head (attention and norm
        statistics aside: those are `readout_linearised`'s coefficients)."""
        raise NotImplementedError

    @torch.no_grad()
    def folded_heads(self):
        if self.pooler is None:
            return super().folded_heads()
        maps = self._pool_maps()
        folded = [torch.einsum("hkw,pwd->hpkd", self.out_maps(layer).float(), maps.float())
                  for layer in range(self.layers)]
        return torch.stack(folded).flatten(2, 3)  # [L, H, P * hd, D]: a head's values per pooling head


@dataclass
class PoolParts:
    """An attention pooler's pieces at one input: `query` `[P, hd]` (its one query that the embedding reads),
    `keys` and `values` `[B, T, P, hd]`, `attention` `[B, P, T]` (P pooling heads, T tokens)."""

    query: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    attention: torch.Tensor

    @property
    def mixed(self) -> torch.Tensor:
        """`[B, P, hd]`: each pooling head's attention-weighted values."""
        return torch.einsum("bpt,btpk->bpk", self.attention, self.values)


def _attended(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> PoolParts:
    """`PoolParts` with the softmax attention of `query` `[P, hd]` over `keys` `[B, T, P, hd]`."""
    attention = torch.softmax(torch.einsum("pk,btpk->bpt", query, keys) * scale, dim=-1)
    return PoolParts(query, keys, values, attention)
