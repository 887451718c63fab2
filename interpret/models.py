"""Model catalogue, loading (open_clip names and tags, local checkpoints, the bundled toy model) and caching.

`load_model(name, pretrained)` returns a `ClipModel`: the open_clip model in eval mode with its preprocess,
tokenizer and geometry. Models are cached per process, so a request never reloads one.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import logging
import os
import re
import socket
import threading
from collections import OrderedDict
from urllib.parse import urlparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import CaptionError, InterpretError, ModelLoadError
from .images import ImageSource, for_model, load_image
from .limits import MAX_TEXT_CHARS, MODELS_KEPT, check_unicode, visible
from .paths import INDEXES, TOY_DIR, TOY_MODELS, is_toy
from .towers import tower_of
from .toy.trunk import register_toy_trunks

TOY_NAME = "toy"
register_toy_trunks()  # toy-pooled's image trunk, by name, for open_clip
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the app's model picker."""

    name: str
    pretrained: str | None

    @property
    def label(self) -> str:
        if is_toy(self.name):
            return f"{self.name} (bundled)"
        return f"{self.name} / {self.pretrained or 'random init'}"

    @property
    def slug(self) -> str:
        """A folder name for this model's databases and labels: 'ViT-B-32__openai', 'ViT-B-32__random', 'toy'."""
        if is_toy(self.name):
            return self.name
        weights = Path(self.pretrained).stem if self.pretrained and os.path.sep in self.pretrained else self.pretrained
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.name}__{weights or 'random'}")


# The six models of CLIP-InterpreT (pretrained weights come from the Hugging Face hub on first use).
PRETRAINED_CATALOGUE = (
    ModelSpec("ViT-B-16", "laion2b_s34b_b88k"),
    ModelSpec("ViT-B-16", "openai"),
    ModelSpec("ViT-B-32", "datacomp_m_s128m_b4k"),
    ModelSpec("ViT-B-32", "openai"),
    ModelSpec("ViT-L-14", "laion2b_s32b_b82k"),
    ModelSpec("ViT-L-14", "openai"),
)
# Newer towers the seam reads (`towers`): DFN's class-token ViT, EVA-02 (timm Eva: RoPE, sub-LN, SwiGLU), SigLIP 2
# and PE-Core (attention pooling; SigLIP's tokenizer needs the `transformers` package and the hub), CoCa (open_clip's
# attention pooler, read at its first query; a class token appended to its text).
NEWER_CATALOGUE = (ModelSpec("ViT-B-16", "dfn2b"), ModelSpec("EVA02-B-16", "merged2b_s8b_b131k"),
                   ModelSpec("ViT-B-16-SigLIP2", "webli"), ModelSpec("PE-Core-B-16", "meta"),
                   ModelSpec("coca_ViT-B-32", "laion2b_s13b_b90k"))
# The same architectures with random weights: always loadable, for inspecting shapes offline.
RANDOM_CATALOGUE = (ModelSpec("ViT-B-32", None), ModelSpec("ViT-B-16", None), ModelSpec("ViT-L-14", None),
                    ModelSpec("EVA02-B-16", None), ModelSpec("PE-Core-B-16", None))


def catalogue() -> list[ModelSpec]:
    """Every model the app offers: the bundled toy models (when present), the pretrained six, the newer towers,
    random-init ones."""
    toy = [ModelSpec(name, None) for name, folder in TOY_MODELS.items() if (folder / "open_clip_config.json").is_file()]
    return toy + list(PRETRAINED_CATALOGUE) + list(NEWER_CATALOGUE) + list(RANDOM_CATALOGUE)


def spec_from_label(label: str) -> ModelSpec:
    for spec in catalogue():
        if spec.label == label:
            return spec
    raise ModelLoadError(f"Unknown model '{label}'. Choose one of: {', '.join(s.label for s in catalogue())}.")


@dataclass(frozen=True)
class Geometry:
    """Shapes of a CLIP model that every analysis needs."""

    layers: int  # vision transformer blocks
    heads: int  # attention heads per block
    width: int  # residual stream width
    head_dim: int  # width // heads
    embed_dim: int  # joint image-text space
    grid: tuple[int, int]  # patch grid (rows, columns)
    patch_size: tuple[int, int]
    image_size: tuple[int, int]
    context_length: int  # text tokens, start and end included
    prefix: int = 1  # vision tokens before the patches (the class token, registers)

    @property
    def tokens(self) -> int:
        """Vision tokens: the prefix tokens (class token, registers) plus one per patch."""
        return self.prefix + self.grid[0] * self.grid[1]


def layer_index(layer: int, count: int, owner: str) -> int:
    """`layer` (negative ones count from the end) as an index into the `count` layers of `owner` (named in the
    message: 'toy (bundled)', 'The text tower of toy (bundled)')."""
    index = layer + count if layer < 0 else layer
    if not 0 <= index < count:
        raise InterpretError(f"{owner} has layers 0..{count - 1} (or -{count}..-1); there is no layer {layer}.")
    return index


def head_index(head: int, count: int, owner: str) -> int:
    """`head`, checked against the `count` heads of each layer of `owner`."""
    if not 0 <= head < count:
        raise InterpretError(f"{owner} has heads 0..{count - 1}; there is no head {head}.")
    return head


def project(states: torch.Tensor, projection: torch.Tensor | torch.nn.Module | None) -> torch.Tensor:
    """A tower's output projection, which open_clip keeps as a matrix, a Linear or nothing."""
    if projection is None:
        return states
    return projection(states) if isinstance(projection, torch.nn.Module) else states @ projection


@dataclass(frozen=True)
class EncodedTexts:
    """Tokenised captions and which of them had to be cut to the context length."""

    tokens: torch.Tensor  # [M, context_length] token ids
    truncated: list[bool]
    kept: list[str]  # the text each caption was cut to (the caption itself when not truncated)

    def warnings(self) -> list[str]:
        return [f"Caption {i + 1} was longer than the model's context and was cut to: '{kept.strip()}'"
                for i, (cut, kept) in enumerate(zip(self.truncated, self.kept)) if cut]


def token_labels(ids: Sequence[int], decode: Callable[[list[int]], str]) -> list[str]:
    """A label per token id that never splits a character: each token gets the characters it completes (read off
    the decoded prefixes, which end in U+FFFD while a character is incomplete); tokens that only begin or continue
    a character share that character, numbered by part."""
    completed, done = [], ""
    for end in range(1, len(ids) + 1):
        prefix = decode(list(ids[:end])).rstrip("\ufffd")
        if prefix.startswith(done):
            completed.append(prefix[len(done):].strip())
            done = prefix
        else:  # a tokenizer whose decoding is not prefix-stable: the token alone
            completed.append(decode([ids[end - 1]]).strip())
    labels, waiting = [], 0  # tokens so far that completed nothing
    for text in completed:
        if not text:
            waiting += 1
            continue
        if waiting:
            parts = waiting + 1
            labels += [f"{text[0]} {part}/{parts}" for part in range(1, parts)]
            text = f"{text[0]} {parts}/{parts}" + (f" {text[1:]}" if len(text) > 1 else "")
            waiting = 0
        labels.append(text)
    return labels + ["…"] * waiting  # parts of a character the context cut off


TEXT_BATCH = 256  # captions through the text tower at once
TOKENIZER_WORDS_KEPT = 20_000  # words a BPE tokenizer keeps encoded (open_clip's kept every word it ever saw)
TEXT_EMBEDDINGS_KEPT_BYTES = 48 * 2**20  # a model's text embeddings kept for the next request (about 20,000 at D 512)
TOKENISED_TEXTS_KEPT_BYTES = 16 * 2**20  # a model's tokenised captions kept (about 20,000 short ones)
DERIVED_KEPT_BYTES = 256 * 2**20  # maps derived from a model's weights (ViT-B-32's MLP 9 neurons' write values: 19 MB)


class BoundedCache(OrderedDict):
    """A dict that keeps its `size` most recently written keys (thread-safe writes), besides the `pinned` ones it was
    made with (a tokenizer's special tokens), which it always keeps."""

    def __init__(self, pinned: dict, size: int = TOKENIZER_WORDS_KEPT):
        self._lock = threading.Lock()
        self.pinned = set(pinned)
        self.size = size
        super().__init__(pinned)

    def __setitem__(self, key, value) -> None:
        with self._lock:
            super().__setitem__(key, value)
            while len(self) > self.size + len(self.pinned):
                oldest = next(key for key in self if key not in self.pinned)
                del self[oldest]


def _size_in_bytes(value) -> int:
    """Roughly the memory `value` holds: a tensor's elements, a string's or bytes' length, a tuple's items."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, tuple):
        return sum(_size_in_bytes(item) for item in value)
    return 8


class KeptByBytes:
    """A model's recent results (tokenised captions, text embeddings) under their keys, up to `size` bytes of keys
    and values, least recently used first out (thread-safe). Entries belong to one `version` of what computed them
    (the model's weights): a lookup or a keep under another version forgets them all first, so an entry is always
    what the model gives now."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self._bytes = 0
        self._version = None
        self._lock = threading.Lock()

    def _adopt(self, version) -> None:
        """Forget every entry kept for another version (called under the lock)."""
        if version != self._version:
            self._entries.clear()
            self._bytes = 0
            self._version = version

    def lookup(self, keys: list, version=None) -> list:
        """Each key's kept value, or None."""
        with self._lock:
            self._adopt(version)
            found = []
            for key in keys:
                value = self._entries.get(key)
                if value is not None:
                    self._entries.move_to_end(key)
                found.append(value)
            return found

    def keep(self, keys: list, values: list, version=None) -> None:
        """Keep `values` under `keys` (tensors detached, on the CPU, as copies: not views that keep a whole batch
        alive), dropping the least recently used beyond `size` bytes."""
        with self._lock:
            self._adopt(version)
            for key, value in zip(keys, values):
                if key in self._entries:
                    continue
                if isinstance(value, torch.Tensor):
                    value = value.detach().cpu().clone()
                self._entries[key] = value
                self._bytes += _size_in_bytes(key) + _size_in_bytes(value)
            while self._bytes > self.size and self._entries:
                key, value = self._entries.popitem(last=False)
                self._bytes -= _size_in_bytes(key) + _size_in_bytes(value)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes


def bounded_word_cache(tokenizer):
    """`tokenizer` with its cache of encoded words bounded: open_clip's `SimpleTokenizer.cache` is a dict that keeps
    every word it has seen (about 21 MiB more, for good, for each descriptor file of new words a visitor sent)."""
    cache = getattr(tokenizer, "cache", None)
    if isinstance(cache, dict) and not isinstance(cache, BoundedCache):
        tokenizer.cache = BoundedCache(cache)
    return tokenizer


class ClipModel:
    """An open_clip CLIP whose image tower a registered family reads (`towers.FAMILIES`), in eval mode, with its
    preprocess and tokenizer. `tower` is that family's view of the image tower: every analysis reads the tower
    through it."""

    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, name: str, pretrained: str | None,
                 device: str = "cpu"):
        self.tower = tower_of(model.visual, name)
        self.model = model.eval().to(device)
        self.preprocess = preprocess
        self.tokenizer = bounded_word_cache(tokenizer)
        # A visitor who sends the same descriptor file or texts again waits for neither the tokenizer nor the tower:
        self.token_cache = KeptByBytes(TOKENISED_TEXTS_KEPT_BYTES)  # caption -> (token row, cut?, text kept)
        self.text_cache = KeptByBytes(TEXT_EMBEDDINGS_KEPT_BYTES)  # token row's bytes -> unit embedding [D]
        self.derived_cache = KeptByBytes(DERIVED_KEPT_BYTES)  # key -> a tensor derived from the weights (`derived`)
        self.name = name
        self.pretrained = pretrained
        self.device = torch.device(device)
        tower = self.tower
        self.geometry = Geometry(
            layers=tower.layers,
            heads=tower.heads,
            width=tower.width,
            head_dim=tower.head_dim,
            embed_dim=tower.embed_dim,
            grid=tower.grid,
            patch_size=tower.patch_size,
            image_size=tower.image_size,
            context_length=int(getattr(model, "context_length", 77)),
            prefix=tower.prefix,
        )
        self._lock = threading.Lock()
        self._folded_heads: torch.Tensor | None = None
        self._weights_hash: str | None = None

    def __repr__(self) -> str:
        g = self.geometry
        return (f"ClipModel({self.name!r}, pretrained={self.pretrained!r}, layers={g.layers}, heads={g.heads}, "
                f"width={g.width}, embed_dim={g.embed_dim}, grid={g.grid[0]}x{g.grid[1]})")

    @property
    def label(self) -> str:
        return ModelSpec(self.name, self.pretrained).label

    @property
    def slug(self) -> str:
        """A folder name for this model's databases and labels (see `ModelSpec.slug`)."""
        return ModelSpec(self.name, self.pretrained).slug

    @property
    def index_dir(self) -> Path:
        """Where this model's databases and head labels live (`indexes/<slug>`)."""
        return INDEXES / self.slug

    @property
    def weights_hash(self) -> str:
        """SHA-256 of the weights (every tensor of the state dict, in order, as float32): names the exact model a
        database was built with. Computed once per model (about a second for ViT-L-14)."""
        with self._lock:
            if self._weights_hash is None:
                digest = hashlib.sha256()
                for name, tensor in self.model.state_dict().items():
                    digest.update(name.encode())
                    digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
                self._weights_hash = digest.hexdigest()
            return self._weights_hash

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.visual

    # --- images -------------------------------------------------------------------------------------------
    def preprocess_images(self, images: Sequence[ImageSource] | ImageSource | torch.Tensor) -> torch.Tensor:
        """PIL images, paths, bytes or arrays (or an already preprocessed batch) -> `[B, 3, H, W]` on the device."""
        if isinstance(images, torch.Tensor):
            batch = images if images.dim() == 4 else images.unsqueeze(0)
            expected = (3, *self.geometry.image_size)
            if tuple(batch.shape[1:]) != expected:
                raise ValueError(f"Expected a preprocessed batch [B, {expected[0]}, {expected[1]}, {expected[2]}], "
                                 f"got {list(batch.shape)}.")
            return batch.to(self.device, torch.float32)
        if isinstance(images, (str, Path, bytes, Image.Image)) or (hasattr(images, "ndim")):
            images = [images]
        return torch.stack([self.preprocess(self.read_image(image)) for image in images]).to(self.device)

    def read_image(self, source: ImageSource) -> Image.Image:
        """A picture as this model reads it: RGB, its shortest side at most `images.for_model` of the model's input
        (a large photo is decoded reduced: its time and memory do not grow with its size); a PIL image as it is."""
        return load_image(source, short_side=self.reading_side)

    @property
    def reading_side(self) -> int:
        """The shortest side pictures are read at for this model (`read_image`)."""
        return for_model(max(self.geometry.image_size))

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        """L2-normalised image embeddings `[B, D]`."""
        return F.normalize(self.model.encode_image(self.preprocess_images(images)).float(), dim=-1)

    # --- texts --------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str] | str) -> EncodedTexts:
        """Token ids `[M, context_length]`; captions longer than the context are cut (and reported); empty ones,
        and ones over `limits.MAX_TEXT_CHARS` characters (their tokenisation alone would take seconds), refused.
        Captions tokenised before (`token_cache`, bounded) are not tokenised again."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise CaptionError("No caption given.")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise CaptionError(f"Caption {i + 1} is not text ({type(text).__name__}).")
            if len(text) > MAX_TEXT_CHARS:
                raise CaptionError(f"Caption {i + 1} is {len(text):,} characters long; the limit is "
                                   f"{MAX_TEXT_CHARS:,} (the model reads at most {self.geometry.context_length} "
                                   "tokens).")
            try:
                check_unicode(text, f"Caption {i + 1}")
            except InterpretError as error:
                raise CaptionError(str(error)) from None
            if not visible(text):
                raise CaptionError("The caption is empty" + (" (it holds only invisible characters)" if text else "")
                                   + ": type a few words describing the image.")
        found = self.token_cache.lookup(texts)
        new = list(dict.fromkeys(text for text, entry in zip(texts, found) if entry is None))
        if new:
            rows = self.tokenizer(new).cpu()
            inner = self.geometry.context_length - self._special_count()
            entries = []
            for text, row in zip(new, rows):
                ids = self._encode_ids(text)
                cut = ids is not None and len(ids) > inner
                kept = self._decode_ids(ids[:inner]).rstrip("\ufffd") if cut else text  # never half a character
                entries.append((row, cut, kept))
            self.token_cache.keep(new, entries)
            fresh = dict(zip(new, entries))
            found = [entry if entry is not None else fresh[text] for text, entry in zip(texts, found)]
        rows, truncated, kept = zip(*found)
        return EncodedTexts(tokens=torch.stack(rows).to(self.device), truncated=list(truncated), kept=list(kept))

    def _hugging_face_tokenizer(self):
        """The `transformers` tokenizer inside open_clip's `HFTokenizer` (SigLIP's, CLIPA's), or None."""
        inner = getattr(self.tokenizer, "tokenizer", None)
        return inner if callable(getattr(inner, "convert_ids_to_tokens", None)) else None

    def _encode_ids(self, text: str) -> list[int] | None:
        """The caption's word ids, no special tokens, not cut (None: a tokenizer that cannot say)."""
        encode = getattr(self.tokenizer, "encode", None)
        if callable(encode):
            return list(encode(text))
        hugging_face = self._hugging_face_tokenizer()
        if hugging_face is None:
            return None
        clean = getattr(self.tokenizer, "clean_fn", lambda words: words)  # as HFTokenizer cleans before it encodes
        return list(hugging_face.encode(clean(text), add_special_tokens=False))

    def _decode_ids(self, ids: list[int]) -> str:
        decode = getattr(self.tokenizer, "decode", None) or getattr(self._hugging_face_tokenizer(), "decode", None)
        return decode(ids) if callable(decode) else ""

    def _special_count(self) -> int:
        """How many special tokens the tokenizer adds to a caption (CLIP's: start and end)."""
        hugging_face = self._hugging_face_tokenizer()
        return 2 if hugging_face is None else int(hugging_face.num_special_tokens_to_add())

    def token_strings(self, text: str) -> list[str]:
        """The caption's tokens as labels, in the places the model sees them: CLIP's start and end tokens
        ('<start>', '<end>'), a Hugging Face tokenizer's own special tokens where it puts them ('</s>', '<bos>'),
        the words cut to the context. A token that holds part of a character (byte-level tokenizers split emoji,
        CJK and other scripts) is labelled with the whole character and which part it holds ('你 1/2', '你 2/2');
        never half a character."""
        hugging_face = self._hugging_face_tokenizer()
        if hugging_face is None:
            ids = (self._encode_ids(text) or [])[: self.geometry.context_length - 2]
            return ["<start>"] + token_labels(ids, self._decode_ids) + ["<end>"]
        row = [int(i) for i in self.tokenizer([text])[0]]  # the ids the model reads, padding after them
        while row and row[-1] == hugging_face.pad_token_id:
            row.pop()
        special = set(hugging_face.all_special_ids)
        words = iter(token_labels([i for i in row if i not in special], self._decode_ids))
        return [str(hugging_face.convert_ids_to_tokens(i)) if i in special else next(words) for i in row]

    def encode_texts(self, texts: Sequence[str] | str) -> torch.Tensor:
        """L2-normalised text embeddings `[M, D]`."""
        return self.embed_tokens(self.tokenize(texts))

    @torch.no_grad()
    def embed_tokens(self, encoded: EncodedTexts) -> torch.Tensor:
        """L2-normalised text embeddings `[M, D]` of already tokenised captions, `TEXT_BATCH` at a time (memory
        stays that of one batch however many captions: 6,000 at once took gigabytes), shortest first. A causal
        text tower read out at the end token runs on the tokens up to each batch's last end token only (the
        padding after it cannot change the embedding): the same numbers, several times faster for short
        captions. Captions embedded before (`text_cache`, bounded) are not embedded again."""
        tokens = encoded.tokens
        if len(tokens) == 0:
            return self._embed_uncached(tokens)
        keys = [row.numpy().tobytes() for row in tokens.cpu()]
        version = self._weights_version()
        found = self.text_cache.lookup(keys, version)
        missing = [i for i, embedding in enumerate(found) if embedding is None]
        if missing:
            first_row: dict[bytes, int] = {}  # a caption given twice goes through the tower once
            for i in missing:
                first_row.setdefault(keys[i], i)
            rows = torch.tensor(list(first_row.values()), device=tokens.device)
            computed = self._embed_uncached(tokens[rows]).cpu()
            self.text_cache.keep(list(first_row), list(computed), version)
            fresh = dict(zip(first_row, computed))
            found = [embedding if embedding is not None else fresh[key] for key, embedding in zip(keys, found)]
        return torch.stack(found).to(self.device)

    def _weights_version(self) -> int:
        """A number that moves whenever a weight of the model changes (in place: its version counter; or replaced:
        its identity), for `text_cache`."""
        return hash(tuple((id(parameter), parameter._version) for parameter in self.model.parameters()))

    def _embed_uncached(self, tokens: torch.Tensor) -> torch.Tensor:
        if len(tokens) <= TEXT_BATCH:
            return self._embed_batch(tokens)
        tower = self.causal_text_tower()
        order = torch.argsort(self.end_positions(tokens)) if tower is not None else torch.arange(len(tokens))
        embeddings = torch.empty(len(tokens), self.geometry.embed_dim)
        for start in range(0, len(tokens), TEXT_BATCH):
            chosen = order[start:start + TEXT_BATCH]
            embeddings[chosen] = self._embed_batch(tokens[chosen.to(tokens.device)]).cpu()
        return embeddings.to(self.device)

    def _embed_batch(self, tokens: torch.Tensor) -> torch.Tensor:
        tower = self.causal_text_tower()
        if tower is None:
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        ends = self.end_positions(tokens)
        states, mask = self.text_stream(tokens[:, :int(ends.max()) + 1])
        states = tower.ln_final(tower.transformer(states, attn_mask=mask))
        pooled = states[torch.arange(len(tokens), device=tokens.device), ends]
        return F.normalize(project(pooled, tower.text_projection).float(), dim=-1)

    def text_work(self, encoded: EncodedTexts) -> float:
        """The multiply-adds `embed_tokens` takes for `encoded`: per caption, each token it runs on (up to its end
        token for a causal tower read there, else the whole context) x the text tower's layers x (12 width^2 for
        the projections and the MLP + 2 x tokens x width for the attention)."""
        clip = self.model
        tower = clip.text if hasattr(clip, "text") else clip
        transformer = getattr(tower, "transformer", None)
        width = getattr(transformer, "width", None) or self.geometry.embed_dim
        layers = getattr(transformer, "layers", None) or len(getattr(transformer, "resblocks", ())) or 12
        tokens = encoded.tokens
        if self.causal_text_tower() is not None:
            lengths = (self.end_positions(tokens) + 1).double()
        else:
            lengths = torch.full((len(tokens),), float(tokens.shape[1]), dtype=torch.float64)
        return float((lengths * layers * (12 * width ** 2 + 2 * lengths * width)).sum())

    def text_stream(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token ids `[M, n]` (for a causal tower, cut after their end tokens) -> the residual stream entering
        block 0 of the text tower (`text_tower`), `[M, n, width]`, and its causal mask `[n, n]` (None for a tower
        without one)."""
        tower = self.text_tower()
        length = tokens.shape[1]
        cast = tower.transformer.get_cast_dtype()
        states = tower.token_embedding(tokens).to(cast) + tower.positional_embedding[:length].to(cast)
        mask = getattr(tower, "attn_mask", None)
        if self.text_class_token():
            return self._with_class_token(tower, tokens, states, mask)
        return states, None if mask is None else mask[:length, :length]

    @staticmethod
    def _with_class_token(tower, tokens: torch.Tensor, states: torch.Tensor, causal: torch.Tensor):
        """CoCa's text stream: its class token appended after the whole context (`[M, n + 1, width]`), and the
        mask: causal, and no token attends to padding (`pad_id`; with `correct_cls_mask` off, as in the released
        weights, open_clip's key mask is shifted by one place, which is kept). The mask is the first caption's
        (interaction maps give a caption's reference its mask)."""
        length = tokens.shape[1] + 1
        cls = tower.cls_emb.to(states) + tower.positional_embedding[length - 1].to(states)
        states = torch.cat([states, cls.expand(len(tokens), 1, -1)], dim=1)
        valid = tokens[0] != tower.pad_id
        always = valid.new_ones(1)
        valid = torch.cat([valid, always] if tower.correct_cls_mask else [always, valid])
        mask = causal[:length, :length].clone()
        mask[:, ~valid] = float("-inf")
        return states, mask

    def text_tower(self) -> torch.nn.Module | None:
        """The module holding open_clip's text transformer (the CLIP itself, or a CustomTextCLIP's `text`) when it
        is read out at one token: causal and at its end token (CLIP), or without a causal mask at its last or
        first position (SigLIP's), or causal with a class token appended (CoCa's); None for any other."""
        clip = self.model
        tower = clip.text if hasattr(clip, "text") else clip
        pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", None))
        causal = getattr(tower, "attn_mask", None) is not None
        with_class_token = getattr(tower, "cls_emb", None) is not None and causal  # CoCa's
        if not ((pool in ("argmax", "eos") and causal) or (pool in ("last", "first") and not causal)
                or with_class_token) or getattr(tower, "use_pad_mask", False) or not hasattr(tower, "token_embedding"):
            return None
        return tower

    def text_class_token(self) -> bool:
        """Whether the text tower appends a class token after the context and reads it out (CoCa's)."""
        tower = self.text_tower()
        return tower is not None and getattr(tower, "cls_emb", None) is not None

    def causal_text_tower(self) -> torch.nn.Module | None:
        """`text_tower` when it is causal and read at the end token (the padding after it then changes nothing),
        else None."""
        tower = self.text_tower()
        if tower is None or getattr(tower, "attn_mask", None) is None or self.text_class_token():
            return None
        return tower

    def readout_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[M]`: where the text tower reads each caption of `tokens` `[M, context]` out: its end token (causal
        towers), or its last or first position."""
        tower = self.text_tower()
        pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", None))
        if pool in ("last", "first"):
            return torch.full((len(tokens),), tokens.shape[1] - 1 if pool == "last" else 0, device=tokens.device)
        return self.end_positions(tokens)

    def end_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[M]`: where the causal text tower reads each caption of `tokens` `[M, context]` out (its end token)."""
        tower = self.text_tower()
        pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", None))
        if pool == "eos":
            eos = getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))
            return (tokens == eos).int().argmax(dim=-1)
        return tokens.argmax(dim=-1)

    # --- folded weights used by the decomposition ---------------------------------------------------------
    def folded_head_weights(self) -> torch.Tensor:
        """`[L, H, V, D]` (V: the tower's `value_width`): each head's output map pushed through LayerScale, the
        readout norm's centring and scale, and the projection (`towers.VisionTower.folded_heads`). A head's pooled
        value vectors times this, divided by the readout norm's std, give its direct contribution to the image
        embedding. Computed once per model."""
        with self._lock:
            if self._folded_heads is None:
                self._folded_heads = self.tower.folded_heads()
            return self._folded_heads


    def derived(self, key, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """An image-independent tensor derived from the weights (a layer's neuron write values, ...) under `key`:
        made by `make()` once and kept while the weights stay as they are, up to `DERIVED_KEPT_BYTES` in all (the
        least recently used first out; a larger one is made again when asked again)."""
        version = self._weights_version()
        found = self.derived_cache.lookup([key], version)[0]
        if found is None:
            found = make()
            self.derived_cache.keep([key], [found], version)
        return found.to(self.device)


def _check_config(name: str) -> None:
    config = open_clip.get_model_config(name)
    if config is None:
        known = open_clip.list_models()
        close = difflib.get_close_matches(name, known, n=5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(f"Unknown model '{name}'.{hint} Known vision transformers include ViT-B-32, "
                             "ViT-B-16 and ViT-L-14 (see open_clip.list_models()).")
    vision = config["vision_cfg"]
    if isinstance(vision.get("layers"), (list, tuple)):
        raise ModelLoadError(f"'{name}' has a ResNet image tower; only vision transformers can be decomposed.")
    if "timm_model_name" in vision:
        timm_name, pool = vision["timm_model_name"], vision.get("timm_pool", "avg")
        readable = (timm_name.startswith("eva") and pool in ("token", "avg")) or \
            (timm_name.startswith("vit_") and pool in ("token", "map"))
        if not readable or vision.get("timm_proj") not in (None, "none"):
            raise ModelLoadError(f"'{name}' has a timm image tower ({timm_name}, pooled with '{pool}'); of timm "
                                 "towers, the families here read EVA's (class token, average), PE-Core's and "
                                 "ViT's (class token, attention pooling as SigLIP's) (see interpret/towers/).")
        return
    pool, attentional = vision.get("pool_type", "tok"), vision.get("attentional_pool", False)
    if isinstance(attentional, str) or pool not in ("tok", "avg") or \
            (pool == "avg" and not attentional and not vision.get("final_ln_after_pool")):
        raise ModelLoadError(f"'{name}' pools its image tokens with a 'parallel' or 'cascade' attention pooler, "
                             "or normalises each token before averaging; the families here read class-token, "
                             "average-then-norm and CoCa's attention-pooled readouts.")


_cache_lock = threading.Lock()


def load_model(name: "str | ModelSpec", pretrained: str | None = None, device: str = "cpu") -> ClipModel:
    """Load (once per process) an open_clip vision-transformer CLIP.

    name: an open_clip architecture ("ViT-B-32") or "toy" for the bundled model; or an entry of `catalogue()`,
    or its label ("toy (bundled)", "ViT-B-32 / openai"), which names the weights too.
    pretrained: a tag ("openai", "laion2b_s34b_b88k"), a local checkpoint path, or None for random weights.
    Raises `ModelLoadError` with a readable message for unknown names or tags, unsupported towers, and weights
    that cannot be downloaded (offline machines).
    """
    if isinstance(name, ModelSpec) or (pretrained is None and isinstance(name, str) and " " in name):
        spec = name if isinstance(name, ModelSpec) else spec_from_label(name)
        name, pretrained = spec.name, spec.pretrained
    with _cache_lock:  # one load at a time: two requests for the same model share it
        return _load_cached(name, pretrained or None, str(device))


@functools.lru_cache(maxsize=MODELS_KEPT)
def _load_cached(name: str, pretrained: str | None, device: str) -> ClipModel:
    if is_toy(name):
        return _load_toy(name, device)
    _check_config(name)
    kwargs = {}
    if pretrained is not None:
        tag = open_clip.get_pretrained_cfg(name, pretrained)
        if tag:
            kwargs["force_quick_gelu"] = bool(tag.get("quick_gelu", False))
        elif not os.path.isfile(pretrained):
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ModelLoadError(f"'{pretrained}' is neither a pretrained tag of {name} nor a checkpoint file. "
                                 f"Known tags: {', '.join(tags) or 'none'}.")
    try:
        with _offline_unless_hub_reachable(), _quiet_open_clip_logging(), torch.random.fork_rng():
            torch.manual_seed(RANDOM_INIT_SEED)  # random-init architectures are the same in every process
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device,
                                                                         **kwargs)
    except Exception as error:  # download or checkpoint failures come as RuntimeError, OSError, HTTP errors...
        if pretrained is not None and not os.path.isfile(pretrained):
            reason = ("the Hugging Face hub cannot be reached from this machine (offline?)" if not hub_reachable()
                      else f"{type(error).__name__}: {str(error)[:300]}")
            raise ModelLoadError(
                f"Could not download the weights of {name} ({pretrained}): {reason}. Weights come from the hub on "
                "first use and are cached afterwards; random-init architectures and the bundled toy model work "
                "offline.") from None
        raise ModelLoadError(f"Could not load {name} from '{pretrained}': {error}") from None
    return ClipModel(model, preprocess, tokenizer_of(name), name, pretrained, device)


def tokenizer_of(name: str):
    """open_clip's tokenizer for `name`, or a message: some (SigLIP's, CLIPA's) are Hugging Face tokenizers that
    need the `transformers` package and the hub on first use."""
    try:
        with _offline_unless_hub_reachable(), _quiet_open_clip_logging():
            return open_clip.get_tokenizer(name)
    except ImportError as error:
        raise ModelLoadError(f"{name}'s tokenizer needs the '{error.name}' package (pip install transformers "
                             "sentencepiece); its image tower is read without it.") from None
    except Exception as error:  # noqa: BLE001 (hub and file errors of many kinds)
        reason = "the Hugging Face hub cannot be reached from this machine (offline?)" if not hub_reachable() \
            else f"{type(error).__name__}: {str(error)[:200]}"
        raise ModelLoadError(f"Could not load {name}'s tokenizer: {reason}. It comes from the hub on first use "
                             "and is cached afterwards.") from None


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (checked once per process)."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_unless_hub_reachable():
    """Put huggingface_hub in offline mode while the hub cannot be reached, so that cached weights load and
    missing ones fail at once instead of after a minute of retries."""
    from huggingface_hub import constants as hub

    if hub.is_offline_mode() or hub_reachable():
        yield
        return
    previous, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = previous


@contextlib.contextmanager
def _quiet_open_clip_logging():
    """open_clip reports download failures and random init on the root logger; we report them ourselves."""
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _load_toy(name: str, device: str) -> ClipModel:
    folder = TOY_MODELS[name]
    if not (folder / "open_clip_config.json").is_file():
        pooling = " --pooling attention" if folder != TOY_DIR else ""
        raise ModelLoadError(f"The bundled toy model {name} is missing from {folder}; train it with "
                             f"`python -m interpret train-toy{pooling}`.")
    return local_model(folder, name, device)


def local_model(folder: Path, name: str | None = None, device: str = "cpu") -> ClipModel:
    """A model saved in open_clip's local-dir layout (open_clip_config.json + weights), e.g. a toy model."""
    folder = Path(folder)
    try:
        json.loads((folder / "open_clip_config.json").read_text())
        with _quiet_open_clip_logging():
            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device=device)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(f"Could not load the model in {folder}: {error}") from None
    return ClipModel(model, preprocess, tokenizer, name or folder.name, None, device)


def model_from_config(config: dict, name: str = "custom", device: str = "cpu") -> ClipModel:
    """A random-init CLIP from an open_clip config dict (`embed_dim`, `vision_cfg`, `text_cfg`; CoCa's with a
    `multimodal_cfg`): for tests and for training the toy model."""
    model = open_clip.CoCa(**config) if "multimodal_cfg" in config else open_clip.CLIP(**config)
    vision = config["vision_cfg"]
    preprocess = open_clip.image_transform(vision["image_size"], is_train=False)
    tokenizer = open_clip.get_tokenizer("", context_length=config["text_cfg"].get("context_length", 77))
    return ClipModel(model, preprocess, tokenizer, name, None, device)
