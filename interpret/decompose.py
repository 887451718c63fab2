"""Exact decomposition of the vision tower's image embedding into heads, source tokens, MLPs and the rest.

The readout's pooled residual state (the class token's, or the patches' average: `towers`) is a sum:
`x_L[pool] = x_0[pool] + sum_l attn_l[pool] + sum_l mlp_l[pool]`, and
`attn_l[pool] = sum_h sum_t (sum_s pool[s] a_lh[s, t]) v_lh[t] W_O,h^T + b_O` (times LayerScale, when present).
Linearising the readout norm (`ln_post`) at the pooled state (its mean and std fixed for this image) makes the
embedding `ln_post(x_L[pool]) @ proj` a sum of one term per part. The head terms are computed in factorised form: the
attention-weighted value vectors `a_lh[t] v_lh[t]` (`[head_dim]` each) are kept, and the fixed per-model map
`W_O,h^T diag(ls_1) C diag(gamma) proj` (`ClipModel.folded_head_weights`, `[head_dim, D]`) takes them to the
joint space only when asked: scores against texts never build the `[B, L, H, T, D]` tensor at all.

Only the rows of each attention matrix that the readout pools (the class token's alone, for class-token towers)
are computed on top of the ordinary forward pass. The tower is read through its family (`towers.VisionTower`).

A spatial decomposition also keeps the stream's parts at each token the readout reads (`TokenStreams`): the
embedding layer's output, every layer's attention and MLP output at that token, and the biases, each carried to the
embedding by the readout's coefficient for that token. Through an attention pooler (or a patch average) every patch
is read, so these give the maps of what the MLPs and the patch's own embedding put there; through a class token
only the class token is read, and every patch's part is its heads' (`weighted_values`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import CaptionError, InterpretError
from .models import ClipModel, layer_index


@dataclass
class ScoreDecomposition:
    """Contributions of every part of the image embedding to cosine scores against `M` unit text embeddings.

    heads `[B, L', H, M]`, mlps `[B, L, M]`, rest `[B, M]`; `total()` `[B, M]` is the cosine score itself.
    """

    heads: torch.Tensor
    mlps: torch.Tensor
    rest: torch.Tensor
    layers: tuple[int, ...]

    def total(self) -> torch.Tensor:
        return self.heads.sum(dim=(1, 2)) + self.mlps.sum(dim=1) + self.rest


STREAM_EMBEDDING, STREAM_REST, STREAM_LAYERS = 0, 1, 2  # rows of `TokenStreams.streams`


@dataclass
class TokenStreams:
    """The parts of the final residual stream at the tokens the readout reads, and the readout's linear map of
    them at this input: `embedding = sum_t sum_p coefficients[b, p, t] streams[b, :, t].sum(0) @ maps[p] + rest`.

    streams: `[B, 2 + 2L, T', W]`: row `STREAM_EMBEDDING`, the embedding layer's output (patch and position
        embeddings, after the pre-norm); row `STREAM_REST`, the attention outputs' biases (and the attention of
        layers not requested); from `STREAM_LAYERS` on, each layer's attention output without its bias (the
        heads' outputs, where they are written), then each layer's MLP output.
    tokens: `[T']` the token indices kept (every token, or only those the readout pools: the class token).
    coefficients: `[B, P, T']`; maps `[P, W, D]` (P readout channels; 1 for pool-then-norm readouts, whose
        coefficient is pool weight / std).
    """

    streams: torch.Tensor
    tokens: torch.Tensor
    coefficients: torch.Tensor
    maps: torch.Tensor

    @property
    def layers(self) -> int:
        return (self.streams.shape[1] - STREAM_LAYERS) // 2

    def attention_row(self, layer: int) -> int:
        return STREAM_LAYERS + layer

    def mlp_row(self, layer: int) -> int:
        return STREAM_LAYERS + self.layers + layer

    def contributions(self) -> torch.Tensor:
        """`[B, K, T', D]`: each row's part of the embedding at each kept token."""
        return torch.einsum("bpt,bktw,pwd->bktd", self.coefficients, self.streams, self.maps)

    def scores(self, texts: torch.Tensor, tokens: int, norm: torch.Tensor) -> torch.Tensor:
        """`[B, K, T, M]`: each row's part of the cosine score with unit texts `[M, D]` at every one of the tower's
        `tokens` (0 where the readout does not read), given the embeddings' norms `[B]`."""
        directions = torch.einsum("pwd,md->pwm", self.maps, texts)
        through = torch.einsum("bktw,pwm->bkptm", self.streams, directions)
        kept = torch.einsum("bkptm,bpt->bktm", through, self.coefficients) / norm[:, None, None, None]
        full = kept.new_zeros(kept.shape[0], kept.shape[1], tokens, kept.shape[3])
        full[:, :, self.tokens] = kept
        return full


@dataclass
class ImageDecomposition:
    """Direct contributions to the (un-normalised) image embedding of a batch of B images.

    weighted_values: `[B, L', H, T, V]` if spatial else `[B, L', H, V]`: attention-weighted value vectors
        `(sum_s pool[s] a_lh[s, t]) v_lh[t]` of the requested layers (summed over tokens t if not spatial); V is
        the tower's `value_width` (head_dim; times the pooling heads for an attention pooler). With `channels`
        (an attention pooler, spatial): the values `v_lh[t]` themselves, `[B, L', H, T, head_dim]`, and
        `channels` `[B, L', H, T, P]` their weight for each readout channel (pooling head) p: kept apart, they
        are P times smaller.
    folded_heads: `[L', H, V, D]`: the requested layers' per-head maps into the joint space.
    inv_std: `[B]`: 1 / std of the readout norm's input at the pooled state (the linearisation point; 1 where the
        readout's coefficients already hold it).
    mlps: `[B, L, D]`: each block's MLP (all layers).
    rest: `[B, D]`: the embedding layer (class + position embeddings after ln_pre), attention output biases,
        ln_post's bias and the attention of layers not requested.
    embedding: `[B, D]`: the model's image embedding, before normalisation.
    layers: the requested layer indices (ascending); grid: the patch grid (rows, columns).
    streams: (spatial only) the stream's parts at the tokens the readout reads (`TokenStreams`).
    readout_rest: `[B, D]`: what no token holds (the readout's own biases; an attention pooler's MLP).
    """

    weighted_values: torch.Tensor
    folded_heads: torch.Tensor
    inv_std: torch.Tensor
    mlps: torch.Tensor
    rest: torch.Tensor
    embedding: torch.Tensor
    layers: tuple[int, ...]
    grid: tuple[int, int]
    spatial: bool
    channels: torch.Tensor | None = None
    streams: TokenStreams | None = None
    readout_rest: torch.Tensor | None = None

    @property
    def heads(self) -> torch.Tensor:
        """`[B, L', H, T, D]` if spatial else `[B, L', H, D]`: each head's (and source token's) contribution.
        Built on demand: B x L' x H x T x D floats can be large (use `scores`/`token_scores` where you can)."""
        if not self.spatial:
            contributions = torch.einsum("blhk,lhkd->blhd", self.weighted_values, self.folded_heads)
        elif self.channels is None:
            contributions = torch.einsum("blhtk,lhkd->blhtd", self.weighted_values, self.folded_heads)
        else:  # one readout channel at a time: never a [B, L', H, T, P, D] intermediate
            folded = self._per_channel(self.folded_heads)
            contributions = sum(self.channels[..., p, None] * torch.einsum("blhtk,lhkd->blhtd", self.weighted_values,
                                                                             folded[:, :, p])
                                for p in range(folded.shape[2]))
        return contributions * self._per_image(self.inv_std, contributions.dim())

    def head_totals(self) -> torch.Tensor:
        """`[B, L', H, D]`: each head's contribution summed over source tokens."""
        contributions = torch.einsum("blhk,lhkd->blhd", self._summed_values(), self.folded_heads)
        return contributions * self._per_image(self.inv_std, 4)

    def token_totals(self) -> torch.Tensor:
        """`[B, T, D]`: each source token's contribution summed over the requested layers' heads (spatial only)."""
        if not self.spatial:
            raise ValueError("token_totals needs a spatial decomposition (decompose_image(..., spatial=True)).")
        return self._per_token(self.folded_heads).sum(dim=(1, 2)) * self._per_image(self.inv_std, 3)

    def total(self) -> torch.Tensor:
        """`[B, D]`: the sum of all parts; equals `embedding` to float error."""
        return self.head_totals().sum(dim=(1, 2)) + self.mlps.sum(dim=1) + self.rest

    def scores(self, texts: torch.Tensor) -> ScoreDecomposition:
        """Each part's contribution to the cosine score against unit text embeddings `[M, D]`:
        `part . text / |embedding|`, so that the parts add up to the cosine similarity."""
        texts = texts.to(self.embedding)
        scale = self.inv_std / self.embedding.norm(dim=-1)  # [B]
        heads = torch.einsum("blhk,lhkm->blhm", self._summed_values(), self._text_directions(texts))
        norm = self.embedding.norm(dim=-1)
        return ScoreDecomposition(
            heads=heads * self._per_image(scale, 4),
            mlps=self.mlps @ texts.T / self._per_image(norm, 3),
            rest=self.rest @ texts.T / norm[:, None],
            layers=self.layers,
        )

    def token_scores(self, texts: torch.Tensor) -> torch.Tensor:
        """`[B, L', H, T, M]`: each head's and source token's contribution to the cosine score (spatial only)."""
        if not self.spatial:
            raise ValueError("token_scores needs a spatial decomposition (decompose_image(..., spatial=True)).")
        texts = texts.to(self.embedding)
        scale = self.inv_std / self.embedding.norm(dim=-1)
        return self._per_token(self._text_directions(texts)) * self._per_image(scale, 5)

    def stream_scores(self, texts: torch.Tensor) -> torch.Tensor:
        """`[B, 2 + 2L, T, M]`: the stream's parts (`TokenStreams` rows) at each token, as parts of the cosine
        score with unit texts `[M, D]` (spatial only). With the readout's rest, the rows without the attention
        rows plus `token_scores` add up to the score; the attention rows are the heads' parts again, placed where
        they are written rather than where they read."""
        if self.streams is None:
            raise ValueError("stream_scores needs a spatial decomposition (decompose_image(..., spatial=True)).")
        texts = texts.to(self.embedding)
        return self.streams.scores(texts, self.weighted_values.shape[3], self.embedding.norm(dim=-1))

    def _summed_values(self) -> torch.Tensor:
        """`[B, L', H, V]`: the values summed over the source tokens (per readout channel, where there are
        several)."""
        if not self.spatial:
            return self.weighted_values
        if self.channels is None:
            return self.weighted_values.sum(dim=3)
        return torch.einsum("blhtp,blhtk->blhpk", self.channels, self.weighted_values).flatten(3)

    def _per_token(self, maps: torch.Tensor) -> torch.Tensor:
        """`[B, L', H, T, X]`: the spatial values through `maps` `[L', H, V, X]` (folded heads, or text
        directions); with readout channels, the channels' weights applied after the (small) product per channel."""
        if self.channels is None:
            return torch.einsum("blhtk,lhkx->blhtx", self.weighted_values, maps)
        through = torch.einsum("blhtk,lhpkx->blhtpx", self.weighted_values, self._per_channel(maps))
        return torch.einsum("blhtpx,blhtp->blhtx", through, self.channels)

    def _per_channel(self, maps: torch.Tensor) -> torch.Tensor:
        """`[L', H, P * k, X]` -> `[L', H, P, k, X]`."""
        layers, heads, width, other = maps.shape
        channels = self.channels.shape[-1]
        return maps.reshape(layers, heads, channels, width // channels, other)

    def _text_directions(self, texts: torch.Tensor) -> torch.Tensor:
        """`[L', H, V, M]`: the texts pulled back into each head's value space."""
        return torch.einsum("lhkd,md->lhkm", self.folded_heads, texts)

    @staticmethod
    def _per_image(values: torch.Tensor, dims: int) -> torch.Tensor:
        return values.reshape(-1, *([1] * (dims - 1)))


def normalise_layers(layers: Sequence[int] | int | None, count: int, owner: str = "The model") -> tuple[int, ...]:
    """Layer indices (negative ones count from the end) of `owner`'s `count` layers -> sorted unique
    non-negative indices."""
    if layers is None:
        return tuple(range(count))
    if isinstance(layers, int):
        layers = [layers]
    result = {layer_index(layer, count, owner) for layer in layers}
    if not result:
        raise InterpretError("No layers requested.")
    return tuple(sorted(result))


@torch.no_grad()
def decompose_image(model: ClipModel, images, layers: Sequence[int] | int | None = None,
                    spatial: bool = True) -> ImageDecomposition:
    """Decompose the image embeddings of `images` (a preprocessed batch `[B, 3, H, W]`, or PIL images / paths)
    into the direct contributions of the heads (and source tokens, if `spatial`) of `layers` (default: all),
    every MLP, and the rest. See `ImageDecomposition`. The tower is read through its family
    (`model.tower`, see `towers`)."""
    batch = model.preprocess_images(images)
    tower = model.tower
    geometry = model.geometry
    wanted = normalise_layers(layers, geometry.layers, model.label)
    if not tower.fixed_pool:
        return _decompose_linearised_readout(model, batch, wanted, spatial)

    x = tower.embed(batch)  # [B, T, width]
    pool = tower.pool_weights(x.device).to(x)  # [T]
    read = pool.nonzero().flatten()  # the tokens the readout pools
    rest_residual = tower.pooled(x)  # [B, width]: residual parts at the readout that go to `rest`
    mlp_residuals = []
    streams = _StreamParts(x[:, read], geometry.layers) if spatial else None
    token_axis = (geometry.tokens,) if spatial else ()
    weighted_values = x.new_empty(x.shape[0], len(wanted), geometry.heads, *token_axis, geometry.head_dim)
    for index in range(geometry.layers):
        q, k, v = tower.qkv(index, x)
        mixed = tower.attend(index, q, k, v)
        attention_out = tower.heads_output(index, mixed)
        if index in wanted:
            scale = tower.out_scale(index, mixed)  # a norm between the heads and the projection, per token
            weighted_values[:, wanted.index(index)] = _pooled_values(tower, index, q, k, v, pool, scale, spatial)
            rest_residual += tower.out_bias(index).to(x)
        else:
            rest_residual += tower.pooled(attention_out)
        x = x + attention_out
        mlp_out = tower.mlp(index, x)
        mlp_residuals.append(tower.pooled(mlp_out))
        if streams is not None:
            streams.add(index, attention_out[:, read], mlp_out[:, read], tower.out_bias(index).to(x), index in wanted)
        x = x + mlp_out

    pooled = tower.pooled(x)
    inv_std = tower.readout_inv_std(pooled)  # [B]
    embedding = tower.readout(pooled)
    readout = tower.folded_readout().to(x)  # [width, D]
    readout_rest = tower.readout_bias().to(x).expand(x.shape[0], -1)
    rest = (rest_residual @ readout) * inv_std[:, None] + readout_rest
    mlps = (torch.stack(mlp_residuals, dim=1) @ readout) * inv_std[:, None, None]
    token_streams = None if streams is None else TokenStreams(
        streams.stacked(), read, pool[read][None, None] * inv_std[:, None, None], readout[None])
    return ImageDecomposition(
        weighted_values=weighted_values,
        folded_heads=_select_layers(model.folded_head_weights(), wanted),
        inv_std=inv_std,
        mlps=mlps,
        rest=rest,
        embedding=embedding,
        layers=wanted,
        grid=geometry.grid,
        spatial=spatial,
        streams=token_streams,
        readout_rest=readout_rest,
    )


class _StreamParts:
    """Collects `TokenStreams.streams` during the forward pass: `[B, T', W]` parts at the kept tokens."""

    def __init__(self, embedded: torch.Tensor, layers: int):
        self.embedding, self.rest = embedded.clone(), torch.zeros_like(embedded)
        self.attention, self.mlps = [None] * layers, [None] * layers

    def add(self, layer: int, attention_out: torch.Tensor, mlp_out: torch.Tensor, bias: torch.Tensor,
            wanted: bool) -> None:
        """One block's outputs at the kept tokens; a layer not requested goes to the rest whole."""
        if wanted:
            self.rest += bias
            self.attention[layer] = attention_out - bias
        else:
            self.rest += attention_out
            self.attention[layer] = torch.zeros_like(attention_out)
        self.mlps[layer] = mlp_out

    def stacked(self) -> torch.Tensor:
        return torch.stack([self.embedding, self.rest, *self.attention, *self.mlps], dim=1)


def _decompose_linearised_readout(model: ClipModel, batch: torch.Tensor, wanted: tuple[int, ...],
                                  spatial: bool) -> ImageDecomposition:
    """`decompose_image` for a readout known only at the end of the forward pass (an attention pooler: its
    attention and the final norm's statistics at this input, `VisionTower.readout_linearised`): the stream's
    parts are kept at every token, and the attention of the wanted layers whole, then read out together. A
    head's values come once per readout channel (pooling head): `value_width` = head_dim x channels."""
    tower, geometry = model.tower, model.geometry
    x = tower.embed(batch)
    rest_stream, mlp_streams, attention = x.clone(), [], {}
    streams = _StreamParts(x, geometry.layers) if spatial else None
    for index in range(geometry.layers):
        q, k, v = tower.qkv(index, x)
        if index in wanted:  # the whole attention is kept, so it also gives the heads' outputs
            weights = tower.attention_weights(index, q, k)  # [B, H, T, T]
            mixed = weights @ v
            scale = tower.out_scale(index, mixed)
            attention[index] = (weights if scale is None else weights * scale[:, None, :, None], v)
            attention_out = tower.heads_output(index, mixed)
            rest_stream += tower.out_bias(index).to(x)
        else:
            attention_out = tower.heads_output(index, tower.attend(index, q, k, v))
            rest_stream += attention_out
        x = x + attention_out
        mlp_out = tower.mlp(index, x)
        mlp_streams.append(mlp_out)
        if streams is not None:
            streams.add(index, attention_out, mlp_out, tower.out_bias(index).to(x), index in wanted)
        x = x + mlp_out
    coefficients, maps, readout_rest = tower.readout_linearised(x)  # [B, P, T], [P, W, D], [B, D]

    def read(stream: torch.Tensor) -> torch.Tensor:  # [B, T, W] -> [B, D]
        return torch.einsum("bpw,pwd->bd", torch.einsum("bpt,btw->bpw", coefficients, stream), maps)

    values, channels = [], []
    for index in wanted:
        weights, v = attention.pop(index)
        pooled = torch.einsum("bpt,bhts->bhsp", coefficients, weights)  # [B, H, T, P]
        if spatial:  # kept apart: the values once, and each token's weight per readout channel
            values.append(v)
            channels.append(pooled)
        else:
            values.append(torch.einsum("bhsp,bhsk->bhpk", pooled, v).flatten(2))  # [B, H, P * head_dim]
    return ImageDecomposition(
        weighted_values=torch.stack(values, dim=1),
        channels=torch.stack(channels, dim=1) if spatial else None,
        folded_heads=_select_layers(model.folded_head_weights(), wanted),
        inv_std=x.new_ones(x.shape[0]),  # the norm's statistics are in the coefficients
        mlps=torch.stack([read(stream) for stream in mlp_streams], dim=1),
        rest=read(rest_stream) + readout_rest,
        embedding=tower.embedding(x),
        layers=wanted,
        grid=geometry.grid,
        spatial=spatial,
        streams=None if streams is None else TokenStreams(
            streams.stacked(), torch.arange(x.shape[1], device=x.device), coefficients, maps),
        readout_rest=readout_rest,
    )


def _select_layers(per_layer: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
    """`per_layer[layers]` without copying when the layers are a contiguous run (the usual case)."""
    if layers == tuple(range(layers[0], layers[-1] + 1)):
        return per_layer[layers[0]:layers[-1] + 1]
    return per_layer[list(layers)]


def _pooled_values(tower, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pool: torch.Tensor,
                   scale: torch.Tensor | None, spatial: bool) -> torch.Tensor:
    """The heads' attention-weighted values as the readout pools them: `(sum_t pool[t] scale[t] a[t, s]) v[s]`
    (`scale`: `[B, T]`, 1 / the std of a norm between the heads and the projection, or None),
    `[B, H, T, head_dim]` if spatial else summed over the source tokens s, `[B, H, head_dim]`. Only the rows of
    the attention that the readout pools are computed (the class token's row alone, for class-token towers)."""
    rows = pool.nonzero().flatten()
    weights = tower.attention_weights(layer, q[:, :, rows], k)  # [B, H, rows, T]
    if scale is not None:
        weights = weights * scale[:, None, rows, None]
    pooled = torch.einsum("bhrt,r->bht", weights, pool[rows])  # [B, H, T]
    if spatial:
        return pooled[..., None] * v
    return torch.einsum("bht,bhtk->bhk", pooled, v)


@dataclass
class HeadReport:
    """Why one image matches one caption: every part's contribution to their cosine score.

    caption: as the model read it (cut to its context when longer); heads `[L, H]` (all layers), mlps `[L]`, rest
    and cosine scalars; `heads.sum() + mlps.sum() + rest == cosine`.
    """

    caption: str
    heads: torch.Tensor
    mlps: torch.Tensor
    rest: float
    cosine: float
    warnings: list[str]

    def top_heads(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The k heads that move the score most, either way, as (layer, head, signed contribution), largest
        magnitude first: a head that lowers the score of a mismatching caption counts as much as one that raises
        it."""
        flat = self.heads.flatten()
        order = torch.argsort(flat.abs(), descending=True)[:k]
        heads_per_layer = self.heads.shape[1]
        return [(int(i) // heads_per_layer, int(i) % heads_per_layer, float(flat[i])) for i in order]


def explain_caption(model: ClipModel, image, caption: str) -> HeadReport:
    """Decompose the cosine score of one image (path, PIL image, bytes or array) and one caption over all
    heads and MLPs. Over-long captions are cut to the context length, and `warnings` says so. One caption: a list
    of them is refused (`decompose_image(...).scores(...)` scores many)."""
    if not isinstance(caption, str):
        raise CaptionError(f"explain_caption explains one caption, not {type(caption).__name__}: call it once per "
                           "caption, or decompose_image(model, image).scores(model.embed_tokens(model.tokenize("
                           "captions))) for many at once.")
    encoded = model.tokenize(caption)
    scores = decompose_image(model, image, spatial=False).scores(model.embed_tokens(encoded))
    return HeadReport(
        caption=encoded.kept[0],  # as the model read it (cut to its context)
        heads=scores.heads[0, :, :, 0].cpu(),  # results live on the CPU (they are drawn and printed there)
        mlps=scores.mlps[0, :, 0].cpu(),
        rest=float(scores.rest[0, 0]),
        cosine=float(scores.total()[0, 0]),
        warnings=encoded.warnings(),
    )
