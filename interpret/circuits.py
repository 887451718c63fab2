"""Circuits: one image-caption score traced through the tower as an attribution graph (`../shared/DESIGN.md`, "Next
shape: circuits"; circuit-tracer's method, for a CLIP image tower).

The local replacement model of one image: every attention pattern and every norm's 1 / std fixed at this input
(the norms' centring stays: it is linear), the readout linearised as the decomposition does it (the score `e . u /
|e|` with `|e|` fixed), and each MLP l replaced by its transcoder's active features plus an error node per token
(`e_l[t] = mlp_l(x)[t] - tc_l(x)[t]`, held constant; an MLP without a transcoder is all error). On this image it
computes exactly what the tower does, and it is affine in the token embeddings, the features' activations, the
errors and the biases. So:

- an edge from a source node (a token's embedding, a feature, an error; writing `w_s` into the stream at its layer
  and token) to a target (a feature's pre-activation, or the score) is `w_s . g`, `g` the gradient of the target
  with respect to the stream there in the frozen model with every path through another MLP cut (those go through
  other nodes); each feature's pre-activation is the sum of its incoming edges and its bias, and the score the sum
  of the edges into it and its bias, exactly;
- the gradients come from a backward pass through the frozen linear maps written out here (attention: `A^T`
  through each head's output and value maps; the MLP's norm for a transcoder's reads and skip connection), for a
  batch of targets at once; one pass from the score through the replacement model with its active features
  responding gives every feature's total effect on the score, which chooses the features kept
  (`max_feature_nodes`) before the edges among them are made;
- pruning, influence, and the replacement and completeness scores are circuit-tracer's (node threshold 0.8, edge
  threshold 0.98). An attention pooler's own MLP (SigLIP's, PE-Core's) has no transcoder: it is one more error
  node, writing straight into the embedding.

The graph is exported as JSON in circuit-tracer's schema (metadata, qParams, nodes, links) with the patch of each
node and the picture added (`to_json`).
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .dictionaries import Dictionary, stored_dictionary
from .errors import InterpretError
from .models import ClipModel
from .towers.base import layer_norm_inv_std

NODE_THRESHOLD, EDGE_THRESHOLD = 0.8, 0.98  # circuit-tracer's defaults
MAX_FEATURE_NODES = 1000  # features kept, by their total effect on the score (circuit-tracer's max_feature_nodes)
TARGET_BATCH = 128  # targets whose gradients go back through the tower together, at most
TARGET_BYTES = 16 * 2 ** 20  # ... and so that their gradients at one block, [targets, T, W], take at most this


@dataclass
class Node:
    """A node of the graph: `kind` "feature", "error", "embedding" or "score"; its layer (the MLP's for a feature or
    an error, -1 for an embedding, the number of blocks for the score (and for the readout's MLP's error)), token,
    feature index (features), activation (features), its total effect on the score in the replacement model with
    the other features responding (`effect`, features: what removing it would change, to first order), and its
    share in circuit-tracer's cumulative influence ranking (`influence`: the lower, the more influential)."""

    kind: str
    layer: int
    token: int
    feature: int = -1
    activation: float = 0.0
    effect: float = 0.0
    influence: float = 0.0

    @property
    def node_id(self) -> str:
        return {"feature": f"{self.layer}_{self.feature}_{self.token}", "error": f"0_{self.layer}_{self.token}",
                "embedding": f"E_{self.token}_{self.token}", "score": f"S_0_{self.token}"}[self.kind]


@dataclass
class AttributionGraph:
    """`nodes` in circuit-tracer's order (features, errors (layer-major), embeddings, the score); `adjacency`
    `[N, N]` (rows targets, columns sources) the direct linear effects; `biases` `[N]` what each target gets from
    no node (0 for sources); `values` `[N]` each target's value (a feature's pre-activation, the score).
    `tokens`: the image's tokens' names; `caption` (and `contrast`: the score is the caption's minus it)."""

    nodes: list[Node]
    adjacency: torch.Tensor
    biases: torch.Tensor
    values: torch.Tensor
    tokens: list[str]
    caption: str
    contrast: str | None
    score: float
    transcoder_layers: list[int]
    features_active: int
    picture: object = None
    node_mask: torch.Tensor | None = None
    edge_mask: torch.Tensor | None = None
    node_influence: torch.Tensor | None = None  # [N]: each node's influence on the score (circuit-tracer's)
    scores: dict = field(default_factory=dict)

    @property
    def score_index(self) -> int:
        return len(self.nodes) - 1

    def kind_slice(self, kind: str) -> slice:
        indices = [i for i, node in enumerate(self.nodes) if node.kind == kind]
        return slice(indices[0], indices[-1] + 1) if indices else slice(0, 0)


# --- the real pass, recorded --------------------------------------------------------------------------------------

@dataclass
class _Pass:
    embedding_in: torch.Tensor  # [T, W] the stream entering block 0 (the token embeddings)
    attention: list  # per block: [H, T, T] weights, times the out-scale of each query token where there is one
    value_inv: list  # per block: [T] the pre-attention norm's 1 / std
    mid: list  # per block: [T, W] the stream after attention
    mlp_inv: list  # per block: [T] the MLP's norm's 1 / std
    mlp_out: list  # per block: [T, W] what the MLP wrote
    codes: dict  # block -> [T, F] its transcoder's features
    predicted: dict  # block -> [T, W] its transcoder's output
    read: list  # per block: [T, W] the MLP's input (its norm's output)
    final: torch.Tensor  # [T, W]
    readout: torch.Tensor  # [T, W]: d score / d final stream (see `_score_gradient`)
    embedding: torch.Tensor  # [D]
    readout_mlp: torch.Tensor | None  # [D]: what the readout's own MLP puts into the embedding (an error node)
    text: torch.Tensor | None = None  # [D]: the unit text (minus the contrast's)


@torch.no_grad()
def _record(model: ClipModel, batch: torch.Tensor, transcoders: dict[int, Dictionary]) -> _Pass:
    tower = model.tower
    x = tower.embed(batch.to(model.device)).float()
    start = x[0]
    attention, value_inv, mids, mlp_inv, outs, reads, codes, predicted = [], [], [], [], [], [], {}, {}
    for index in range(tower.layers):
        q, k, v = tower.qkv(index, x)
        mixed = tower.attend(index, q, k, v)
        weights = tower.attention_weights(index, q, k)[0].float()  # [H, T, T]
        scale = tower.out_scale(index, mixed)
        if scale is not None:
            weights = weights * scale[0][None, :, None].float()
        attention.append(weights)
        value_inv.append(tower.value_inv_std(index, x)[0].float())
        x = x + tower.heads_output(index, mixed).float()
        mids.append(x[0])
        norm = tower.mlp_norm(index)
        mlp_inv.append(layer_norm_inv_std(norm, x)[0].float())
        read = norm(x).float()
        written = tower.mlp_from_input(index, read).float()
        reads.append(read[0])
        outs.append(written[0])
        if index in transcoders:
            codes[index] = transcoders[index].encode(read[0].cpu())
            predicted[index] = transcoders[index](read[0].cpu()).to(x)
        x = x + written
    readout_mlp = tower.readout_mlp_part(x)
    return _Pass(start, attention, value_inv, mids, mlp_inv, outs, codes, predicted, reads, x[0], None,
                 tower.embedding(x)[0].float(), None if readout_mlp is None else readout_mlp[0].float())


# --- the frozen linear maps, transposed ---------------------------------------------------------------------------

def _attention_back(model: ClipModel, layer: int, recorded: _Pass, grad: torch.Tensor) -> torch.Tensor:
    """`[N, T, W]`: the gradient with respect to the stream entering block `layer`'s attention, from `grad` `[N, T,
    W]` with respect to the stream after it (the residual path, and every head with its pattern and its norm's
    statistics fixed)."""
    tower = model.tower
    out_maps = tower.out_maps(layer).detach().float()  # [H, hd, W]
    value_maps = tower.value_maps(layer).detach().float()  # [H, W, hd]
    weights = recorded.attention[layer]  # [H, T, T]
    through = torch.einsum("ntw,hkw->nhtk", grad, out_maps)  # [N, H, T, hd]: at each query token
    back = torch.einsum("hrt,nhrk->nhtk", weights, through)  # to the key tokens
    values = torch.einsum("nhtk,hwk->ntw", back, value_maps) * recorded.value_inv[layer][None, :, None]
    return grad + values


def _norm_read(model: ClipModel, layer: int, recorded: _Pass, direction: torch.Tensor) -> torch.Tensor:
    """`[..., T, W]`: a read `direction` `[..., T, W]` of the MLP's norm output at block `layer`, as a gradient with
    respect to the stream (the norm's scale and centring, its 1 / std at each token fixed)."""
    norm = model.tower.mlp_norm(layer)
    if norm.weight is not None:
        direction = direction * norm.weight.detach().float()
    direction = direction - direction.mean(dim=-1, keepdim=True)
    return direction * recorded.mlp_inv[layer][:, None]


def _mlp_back(model: ClipModel, layer: int, recorded: _Pass, transcoder: Dictionary | None, grad: torch.Tensor,
              features_respond: bool) -> torch.Tensor:
    """The gradient with respect to the stream before block `layer`'s MLP from `grad` after it: the residual path,
    a transcoder's skip connection, and (`features_respond`: the replacement model's own Jacobian) its active
    features, each passing its pre-activation's change on."""
    if transcoder is None:
        return grad
    config = transcoder.config
    into, out = config.input_scale if config.normalisation == "scale" else 1.0, \
        config.target_scale if config.normalisation == "scale" else 1.0
    back = torch.zeros_like(grad)
    if config.skip:
        back = back + grad @ transcoder.W_skip.detach().float() * (into / out)
    if features_respond:
        active = (recorded.codes[layer] > 0).float()  # [T, F]: TopK at a fixed set, ReLU, JumpReLU: slope 1
        through = (grad @ transcoder.W_dec.detach().float().T) * active / out  # [N, T, F]
        back = back + (through @ transcoder.W_enc.detach().float().T) * into
    return grad + _norm_read(model, layer, recorded, back)


def _score_gradient(model: ClipModel, recorded: _Pass, text: torch.Tensor) -> torch.Tensor:
    """`[T, W]`: d score / d final stream with the readout linearised (its norms' statistics and an attention
    pooler's pattern fixed) and `|e|` fixed: `sum_p c[p, t] maps[p] u / |e|`."""
    coefficients, maps, _ = model.tower.readout_linearised(recorded.final[None])
    return torch.einsum("pt,pwd,d->tw", coefficients[0].float(), maps.float(), text.float()) / \
        recorded.embedding.norm()


# --- the graph ----------------------------------------------------------------------------------------------------

def _backward(model: ClipModel, recorded: _Pass, transcoders: dict[int, Dictionary], starts: list,
              features_respond: bool = False, on_layer=None) -> torch.Tensor:
    """For targets `starts` (each (layer, token, gradient `[W]` with respect to the stream it reads there; layer =
    the number of blocks: the final stream, any tokens: gradient `[T, W]`)): `on_layer(block, [N, T, W])` with the
    gradient with respect to the stream after each block's MLP, from the last block down (not kept: memory stays
    one block's); returns `[N, T, W]` with respect to the token embeddings."""
    layers = model.tower.layers
    count, tokens, width = len(starts), recorded.final.shape[0], recorded.final.shape[1]
    grad = torch.zeros(count, tokens, width)
    for n, (layer, token, direction) in enumerate(starts):
        if layer == layers:
            grad[n] = direction
    for layer in reversed(range(layers)):
        if on_layer is not None:
            on_layer(layer, grad)
        grad = _mlp_back(model, layer, recorded, transcoders.get(layer), grad, features_respond)
        injected = [(n, token, direction) for n, (at, token, direction) in enumerate(starts) if at == layer]
        if injected:
            grad = grad.clone()
            for n, token, direction in injected:
                grad[n, token] += direction
        grad = _attention_back(model, layer, recorded, grad)
    return grad


def _feature_reads(recorded: _Pass, transcoders: dict[int, Dictionary], model: ClipModel, layer: int,
                   token: int, feature: int) -> torch.Tensor:
    """`[W]`: d pre-activation / d stream before the MLP at (`layer`, `token`) of a transcoder feature."""
    transcoder = transcoders[layer]
    into = transcoder.config.input_scale if transcoder.config.normalisation == "scale" else 1.0
    read = transcoder.W_enc[:, feature].detach().float() * into
    return _norm_read(model, layer, recorded, read.expand(recorded.final.shape[0], -1))[token]


@torch.no_grad()
def attribution_graph(model: ClipModel, image, caption: str, contrast: str | None = None,
                      transcoders: dict[int, Dictionary] | None = None,
                      max_feature_nodes: int | None = MAX_FEATURE_NODES, node_threshold: float = NODE_THRESHOLD,
                      edge_threshold: float = EDGE_THRESHOLD) -> AttributionGraph:
    """The attribution graph of `image`'s score with `caption` (minus `contrast`'s: "A rather than B") through the
    local replacement model whose MLPs are `transcoders` (default: the model's stored ones, every block that has
    one); the features kept are the `max_feature_nodes` of largest total effect on the score (None: every active
    feature), then pruned as circuit-tracer prunes (`node_threshold`, `edge_threshold`), with its replacement and
    completeness scores."""
    from .images import load_image

    tower = model.tower
    if transcoders is None:
        transcoders = {}
        for layer in range(tower.layers):
            try:
                transcoders[layer] = stored_dictionary(model, "transcoder", layer)[0]
            except InterpretError:
                continue
    for layer, transcoder in transcoders.items():
        if not transcoder.is_transcoder or transcoder.config.layer != layer:
            raise InterpretError(f"{transcoder.config.name} cannot stand in for MLP {layer}.")
    picture = load_image(image) if not isinstance(image, torch.Tensor) else image
    batch = model.preprocess_images([picture]) if not isinstance(picture, torch.Tensor) else picture[None]
    text = model.encode_texts([caption])[0].float().cpu()
    if contrast:
        text = text - model.encode_texts([contrast])[0].float().cpu()
    recorded = _record(model, batch, transcoders)
    recorded.readout, recorded.text = _score_gradient(model, recorded, text), text
    tokens, width = recorded.final.shape
    score = _real_score(recorded)

    # every active feature, its activation and what it writes
    active = []  # (layer, token, feature, activation, write [W])
    for layer, transcoder in sorted(transcoders.items()):
        codes = recorded.codes[layer]
        out = transcoder.config.target_scale if transcoder.config.normalisation == "scale" else 1.0
        for token, feature in (codes > 0).nonzero().tolist():
            value = float(codes[token, feature])
            active.append((layer, token, feature, value, transcoder.W_dec[feature].detach().float() * value / out))
    total = len(active)
    after = {}
    _backward(model, recorded, transcoders, [(tower.layers, None, recorded.readout)], features_respond=True,
              on_layer=lambda layer, grad: after.__setitem__(layer, grad[0]))  # every feature's total effect
    effects = [float(write @ after[layer][token]) for layer, token, _, _, write in active]
    if max_feature_nodes is not None and total > max_feature_nodes:
        keep = torch.tensor(effects).abs().argsort(descending=True)[:max_feature_nodes].sort().values.tolist()
        active, effects = [active[i] for i in keep], [effects[i] for i in keep]

    errors = []  # (layer, token, write)
    for layer in range(tower.layers):
        written = recorded.mlp_out[layer] - (recorded.predicted[layer].float() if layer in transcoders else 0)
        errors += [(layer, token, written[token]) for token in range(tokens)]
    readout_error = recorded.readout_mlp is not None
    nodes = ([Node("feature", layer, token, feature, value, effect)
              for (layer, token, feature, value, _), effect in zip(active, effects)]
             + [Node("error", layer, token) for layer, token, _ in errors]
             + ([Node("error", tower.layers, 0)] if readout_error else [])
             + [Node("embedding", -1, token) for token in range(tokens)] + [Node("score", tower.layers, 0)])
    count = len(nodes)
    adjacency = torch.zeros(count, count)
    starts = [(layer, token, _feature_reads(recorded, transcoders, model, layer, token, feature))
              for layer, token, feature, _, _ in active] + [(tower.layers, None, recorded.readout)]
    targets = list(range(len(active))) + [count - 1]
    feature_writes = torch.stack([write for *_, write in active]) if active else torch.zeros(0, width)
    feature_where = torch.tensor([[layer, token] for layer, token, *_ in active]).reshape(-1, 2)
    error_writes = torch.stack([write for *_, write in errors])
    error_start = len(active)
    batch = max(8, min(TARGET_BATCH, TARGET_BYTES // (tokens * width * 4)))
    for begin in range(0, len(starts), batch):
        rows = torch.tensor(targets[begin:begin + batch])

        def edges(layer: int, grads: torch.Tensor) -> None:  # [n, T, W] after block `layer`'s MLP
            mine = (feature_where[:, 0] == layer).nonzero().flatten() if len(feature_where) else []
            if len(mine):
                every = (grads.reshape(-1, width) @ feature_writes[mine].T).reshape(len(rows), tokens, -1)
                adjacency[rows[:, None], mine[None]] = every[:, feature_where[mine, 1], torch.arange(len(mine))]
            columns = torch.arange(error_start + layer * tokens, error_start + (layer + 1) * tokens)
            adjacency[rows[:, None], columns[None]] = torch.einsum(
                "ntw,tw->nt", grads, error_writes[layer * tokens:(layer + 1) * tokens])

        embedded = _backward(model, recorded, transcoders, starts[begin:begin + batch], on_layer=edges)
        columns = torch.arange(count - 1 - tokens, count - 1)
        adjacency[rows[:, None], columns[None]] = torch.einsum("ntw,tw->nt", embedded, recorded.embedding_in)
    if readout_error:  # the readout's MLP: straight into the embedding
        adjacency[count - 1, count - 2 - tokens] = _readout_error_edge(recorded)
    values = torch.zeros(count)
    for index, (layer, token, feature, _, _) in enumerate(active):
        transcoder = transcoders[layer]
        values[index] = float(transcoder.pre_activations(transcoder.normalised(recorded.read[layer][token])[0])[
            feature])
    values[count - 1] = score
    biases = torch.zeros(count)
    biases[targets] = _biases(model, recorded, transcoders, active)
    graph = AttributionGraph(nodes, adjacency, biases, values, token_names(model), caption, contrast, score,
                             sorted(transcoders), total, picture)
    prune(graph, node_threshold, edge_threshold)
    return graph


def _attention_forward(model: ClipModel, layer: int, recorded: _Pass, change: torch.Tensor) -> torch.Tensor:
    """`[T, W]`: what block `layer`'s heads add for a change `change` `[T, W]` of the stream entering it, their
    patterns and norms' statistics fixed (the linear map `_attention_back` transposes)."""
    tower = model.tower
    values = torch.einsum("tw,hwk->htk", change * recorded.value_inv[layer][:, None],
                          tower.value_maps(layer).detach().float())
    mixed = torch.einsum("hrt,htk->hrk", recorded.attention[layer], values)
    return torch.einsum("hrk,hkw->rw", mixed, tower.out_maps(layer).detach().float())


def _biases(model: ClipModel, recorded: _Pass, transcoders: dict[int, Dictionary], active: list) -> torch.Tensor:
    """`[features + 1]`: each target's value in the replacement model with every node at zero (no token
    embeddings, no feature active, no error): what the biases give it. The model is affine, so this and the edges
    add up to the target's value; computed on its own here, the sum is a check (the tests')."""
    tower = model.tower
    x = torch.zeros_like(recorded.final)
    entering = recorded.embedding_in
    pre_by_layer = {}
    for layer in range(tower.layers):
        middle = x + (recorded.mid[layer] - entering) + _attention_forward(model, layer, recorded, x - entering)
        norm = tower.mlp_norm(layer)
        change = middle - recorded.mid[layer]
        centred = change - change.mean(dim=-1, keepdim=True)
        read = recorded.read[layer] + centred * recorded.mlp_inv[layer][:, None] * (
            norm.weight.detach().float() if norm.weight is not None else 1.0)
        written = torch.zeros_like(x)
        if layer in transcoders:
            transcoder = transcoders[layer]
            pre_by_layer[layer] = transcoder.pre_activations(transcoder.normalised(read)[0])
            u, _, scale = transcoder.normalised(read)
            written = (transcoder.b_dec + transcoder.skipped(u)) / transcoder.output_scale(scale)
        entering = recorded.mid[layer] + recorded.mlp_out[layer]
        x = middle + written.detach().float()
    score = float(recorded.readout.mul(x - recorded.final).sum()) + _real_score(recorded)
    if recorded.readout_mlp is not None:  # an error node, not a bias
        score -= _readout_error_edge(recorded)
    return torch.tensor([float(pre_by_layer[layer][token, feature]) for layer, token, feature, _, _ in active]
                        + [score])


def _readout_error_edge(recorded: _Pass) -> float:
    """The readout's MLP's part of the score (what it writes into the embedding, dotted with the text / |e|)."""
    return float(recorded.readout_mlp @ recorded.text / recorded.embedding.norm())


def _real_score(recorded: _Pass) -> float:
    return float(recorded.embedding @ recorded.text / recorded.embedding.norm())


@torch.no_grad()
def check_interventions(model: ClipModel, image, graph: AttributionGraph, count: int = 30,
                        transcoders: dict[int, Dictionary] | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """For the `count` features of the graph of largest total effect: (the score's change the replacement model
    predicts when the feature's write is taken out, `-effect`; the change measured in the real forward pass with
    that write taken out of its MLP's output at its token, attention and norms free; Pearson's r between them)."""
    from .images import load_image

    tower = model.tower
    transcoders = transcoders or {layer: stored_dictionary(model, "transcoder", layer)[0]
                                  for layer in graph.transcoder_layers}
    chosen = sorted((i for i, node in enumerate(graph.nodes) if node.kind == "feature"),
                    key=lambda i: -abs(graph.nodes[i].effect))[:count]
    if len(chosen) < 2:
        raise InterpretError("The graph has fewer than two features to check.")
    picture = load_image(image) if not isinstance(image, torch.Tensor) else image
    batch = model.preprocess_images([picture]) if not isinstance(picture, torch.Tensor) else picture[None]
    text = model.encode_texts([graph.caption])[0].float()
    if graph.contrast:
        text = text - model.encode_texts([graph.contrast])[0].float()
    x = tower.embed(batch.to(model.device).repeat(len(chosen) + 1, 1, 1, 1))
    for layer in range(tower.layers):
        x = x + tower.heads_output(layer, tower.attend(layer, *tower.qkv(layer, x)))
        written = tower.mlp(layer, x)
        for row, index in enumerate(chosen, start=1):
            node = graph.nodes[index]
            if node.layer == layer:
                transcoder = transcoders[layer]
                scale = transcoder.write_scale(tower.mlp_norm(layer)(x[row, node.token]).float().cpu())
                written[row, node.token] -= (node.activation * transcoder.W_dec[node.feature].detach().float()
                                             / scale).to(written)
        x = x + written
    scores = F.normalize(tower.embedding(x).float(), dim=-1).cpu() @ text.cpu()
    measured = scores[1:] - scores[0]
    predicted = -torch.tensor([graph.nodes[i].effect for i in chosen])
    return predicted, measured, float(torch.corrcoef(torch.stack([predicted, measured]))[0, 1])


@dataclass
class Group:
    """Nodes shown as one: a feature over every token it is kept at, an MLP's errors, the embeddings of a region
    of the picture, the score. `key` names it; `row` is its layer (-1: the embeddings); `influence` the sum of its
    nodes'; `members` their indices."""

    key: str
    kind: str
    row: int
    label: str
    influence: float
    members: list[int]


REGIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")


def region_of(model: ClipModel, token: int) -> str:
    """'class token' (or a register), or the third of the picture a patch lies in ('top left', 'centre', ...)."""
    prefix, (rows, columns) = model.geometry.prefix, model.geometry.grid
    if token < prefix:
        return "class token" if token == 0 else f"register {token}"
    row, column = divmod(token - prefix, columns)
    return REGIONS[3 * min(2, 3 * row // rows) + min(2, 3 * column // columns)]


def group_nodes(graph: AttributionGraph, model: ClipModel, names: dict | None = None, per_row: int = 6
                ) -> tuple[list[Group], list[tuple[str, str, float]]]:
    """The pruned graph's kept nodes grouped (features by layer and feature, named from `names` {(layer,
    feature): name} where it has one; errors by MLP; embeddings by region), the `per_row` most influential groups
    of each row, and the kept links between them summed: (groups, [(source key, target key, weight)])."""
    influence = graph.node_influence if graph.node_influence is not None else torch.ones(len(graph.nodes))
    found: dict[str, Group] = {}
    owner = {}
    for index, node in enumerate(graph.nodes):
        if graph.node_mask is not None and not graph.node_mask[index]:
            continue
        if node.kind == "feature":
            name = (names or {}).get((node.layer, node.feature), "")
            key, label = f"F{node.layer}.{node.feature}", f"{node.feature}: {name}" if name else f"feature {node.feature}"
        elif node.kind == "error":
            key = f"E{node.layer}"
            label = f"MLP {node.layer} error" if node.layer < model.tower.layers else "readout MLP"
        elif node.kind == "embedding":
            key = label = region_of(model, node.token)
        else:
            key, label = "score", "score"
        row = {"embedding": -1, "score": model.tower.layers}.get(node.kind, node.layer)
        group = found.setdefault(key, Group(key, node.kind, row, label, 0.0, []))
        group.influence += float(influence[index])
        group.members.append(index)
        owner[index] = key
    shown = []
    for row in sorted({group.row for group in found.values()}):
        members = sorted((g for g in found.values() if g.row == row), key=lambda g: -g.influence)
        shown += members[:per_row]
    keys = {group.key for group in shown}
    links: dict[tuple[str, str], float] = {}
    mask = graph.edge_mask if graph.edge_mask is not None else graph.adjacency != 0
    for target, source in mask.nonzero().tolist():
        pair = (owner.get(source), owner.get(target))
        if pair[0] in keys and pair[1] in keys and pair[0] != pair[1]:
            links[pair] = links.get(pair, 0.0) + float(graph.adjacency[target, source])
    return shown, [(source, target, weight) for (source, target), weight in links.items()]


def token_names(model: ClipModel) -> list[str]:
    """The image tower's tokens: 'class' (and registers) first, then 'patch r,c'."""
    prefix, (rows, columns) = model.geometry.prefix, model.geometry.grid
    return (["class"] + [f"register {i}" for i in range(1, prefix)])[:prefix] + [
        f"patch {r},{c}" for r in range(rows) for c in range(columns)]


# --- influence, pruning and scores, as circuit-tracer computes them ----------------------------------------------

def normalised(matrix: torch.Tensor) -> torch.Tensor:
    """|A| with each row (target) summing to 1."""
    absolute = matrix.abs()
    return absolute / absolute.sum(dim=1, keepdim=True).clamp(min=1e-10)


def influence(matrix: torch.Tensor, weights: torch.Tensor, max_iterations: int = 1000) -> torch.Tensor:
    """`weights @ (A + A^2 + ...)`: every node's total influence on the weighted targets (A nilpotent: a DAG)."""
    current = weights @ matrix
    total = current.clone()
    for _ in range(max_iterations):
        if not current.any():
            return total
        current = current @ matrix
        total += current
    raise InterpretError("The graph's influence did not converge: it is not acyclic.")


def _threshold(scores: torch.Tensor, share: float) -> float:
    ordered = scores.sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp(min=1e-12)
    return float(ordered[min(int(torch.searchsorted(cumulative, share)), len(ordered) - 1)])


def prune(graph: AttributionGraph, node_threshold: float = NODE_THRESHOLD,
          edge_threshold: float = EDGE_THRESHOLD) -> AttributionGraph:
    """Keep the nodes that carry `node_threshold` of the influence on the score and the edges that carry
    `edge_threshold` (the embeddings and the score always kept; features and errors without a kept edge out, and
    features without one in, dropped until none is left), circuit-tracer's `prune_graph`; set each node's
    influence (its share in the cumulative ranking) and the graph's replacement and completeness scores."""
    if not (0 <= node_threshold <= 1 and 0 <= edge_threshold <= 1):
        raise InterpretError("The node and edge thresholds are shares, from 0 to 1.")
    matrix = graph.adjacency
    count = len(graph.nodes)
    weights = torch.zeros(count)
    weights[graph.score_index] = 1.0
    features, errors, embeddings = (graph.kind_slice(kind) for kind in ("feature", "error", "embedding"))
    node_influence = influence(normalised(matrix), weights)
    node_mask = node_influence >= _threshold(node_influence, node_threshold)
    node_mask[embeddings] = True
    node_mask[graph.score_index] = True
    pruned = matrix.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    normal = normalised(pruned)
    edge_scores = normal * (influence(normal, weights) + weights)[:, None]
    edge_mask = edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)
    sources = torch.ones(count, dtype=torch.bool)
    sources[embeddings], sources[graph.score_index] = False, False
    previous = None
    while previous is None or not torch.equal(previous, node_mask):
        previous = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[sources] &= edge_mask[:, sources].any(dim=0)
        node_mask[features] &= edge_mask[features].any(dim=1)
    ordered, order = node_influence.sort(descending=True)
    cumulative = torch.zeros(count)
    cumulative[order] = ordered.cumsum(0) / ordered.sum().clamp(min=1e-12)
    for node, value in zip(graph.nodes, cumulative.tolist()):
        node.influence = value
    graph.node_mask, graph.edge_mask, graph.node_influence = node_mask, edge_mask, node_influence

    full = normalised(matrix)
    total = influence(full, weights)
    from_embeddings, from_errors = float(total[embeddings].sum()), float(total[errors].sum())
    non_error = 1 - full[:, errors].sum(dim=1)
    output = total + weights
    graph.scores = {
        "replacement": from_embeddings / max(from_embeddings + from_errors, 1e-12),
        "completeness": float((non_error * output).sum() / output.sum().clamp(min=1e-12)),
        "nodes kept": int(node_mask.sum()), "edges kept": int(edge_mask.sum()),
        "features kept": int(node_mask[features].sum()), "features active": graph.features_active,
        "node threshold": node_threshold, "edge threshold": edge_threshold}
    return graph


# --- export -------------------------------------------------------------------------------------------------------

def to_json(graph: AttributionGraph, model: ClipModel, slug: str = "clip-graph", names: dict | None = None) -> dict:
    """The pruned graph in circuit-tracer's schema (`metadata`, `qParams`, `nodes`, `links`), with ours added:
    each node's `patch` ([row, column], or null for the class token and registers), and `metadata.image` (the
    picture as the model sees it, a PNG data URI), `metadata.scores`. `names`: {(layer, feature): name}."""
    prefix, (_, columns) = model.geometry.prefix, model.geometry.grid
    kept = graph.node_mask if graph.node_mask is not None else torch.ones(len(graph.nodes), dtype=torch.bool)
    nodes = []
    for index, node in enumerate(graph.nodes):
        if not kept[index]:
            continue
        patch = None if node.token < prefix or node.kind == "score" else divmod(node.token - prefix, columns)
        kind = {"feature": "cross layer transcoder", "error": "mlp reconstruction error", "embedding": "embedding",
                "score": "logit"}[node.kind]
        label = {"feature": (names or {}).get((node.layer, node.feature), ""), "error": f"MLP {node.layer} error"
                 if node.layer < model.tower.layers else "the readout's MLP",
                 "embedding": graph.tokens[node.token], "score": f"score of '{graph.caption}'" + (
                     f" rather than '{graph.contrast}'" if graph.contrast else "")}[node.kind]
        nodes.append({"node_id": node.node_id, "jsNodeId": node.node_id, "feature": node.feature,
                      "layer": "E" if node.kind == "embedding" else str(node.layer), "ctx_idx": node.token,
                      "feature_type": kind, "clerp": label, "influence": node.influence,
                      "activation": node.activation if node.kind == "feature" else None,
                      "is_target_logit": node.kind == "score", "patch": list(patch) if patch else None})
    targets, sources = graph.edge_mask.nonzero(as_tuple=True) if graph.edge_mask is not None else \
        graph.adjacency.nonzero(as_tuple=True)
    links = [{"source": graph.nodes[s].node_id, "target": graph.nodes[t].node_id,
              "weight": float(graph.adjacency[t, s])} for t, s in zip(targets.tolist(), sources.tolist())]
    picture = ""
    if graph.picture is not None and not isinstance(graph.picture, torch.Tensor):
        stream = io.BytesIO()
        graph.picture.convert("RGB").resize(model.geometry.image_size[::-1]).save(stream, format="PNG")
        picture = "data:image/png;base64," + base64.b64encode(stream.getvalue()).decode()
    return {"metadata": {"slug": slug, "scan": model.label, "transcoder_list": [
                f"transcoder of MLP {layer}" for layer in graph.transcoder_layers],
                "prompt_tokens": graph.tokens, "prompt": graph.caption,
                "node_threshold": graph.scores.get("node threshold", NODE_THRESHOLD),
                "score": graph.score, "scores": graph.scores, "grid": list(model.geometry.grid), "prefix": prefix,
                "image": picture},
            "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
            "nodes": nodes, "links": links}


__all__ = ["AttributionGraph", "Group", "Node", "attribution_graph", "check_interventions", "group_nodes", "influence",
           "normalised", "prune", "region_of", "to_json", "token_names"]
