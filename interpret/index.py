"""Image databases and nearest-neighbour search by head, by property and by the whole embedding (FAISS).

A database holds, for every image of a folder, the token-summed direct contribution of each head of some layers
(default: the last 4) and the whole image embedding. Each is stored as its direction (L2-normalised, float16, in
a FAISS index of its own, memory-mapped when opened) and its length (float32), so that

- per-head image neighbours compare the query's head (l, h) contribution with the database's, by cosine;
- per-head text neighbours compare a text embedding with the database's head (l, h) contributions, by cosine;
- property neighbours compare the sum of the heads labelled with a property (the model's head labels, see
  `textspan.HeadAtlas`) for the query with the same sum over the database (lengths restore the sums exactly);
- plain neighbours compare whole image embeddings, as CLIP does.

Folder layout (`indexes/<model slug>/` by default):

    manifest.json            what was built: model, pretrained tag, weights hash, open_clip version, layers,
                             dtype, count, build time, image root, skipped files, the data folder in use, every
                             data file's size and SHA-256, and the SHA-256 of the manifest itself
    data-<id>/files.json     image paths (relative to the root) with size and mtime, in row order
    data-<id>/embedding.faiss        the search index of the embeddings (of the database's index kind)
    data-<id>/head_L{l}_H{h}.faiss   the search index of head (l, h)
    data-<id>/*.f16.npy              with a compressed kind: the float16 directions, [N, D], for exact re-ranking
    data-<id>/lengths.npy    [L', H, N] float32 lengths of the head contributions
    .building/               chunks of a build in progress (a rerun resumes from them)

Index kinds (`INDEX_KINDS`, chosen by size unless asked, recorded in the manifest as "index"): 'flat' (exact,
float16 codes; the default below `FLAT_BELOW` images), 'ivf-pq' (the default above: inverted lists of 32-byte
product-quantised codes), 'ivf-sq8' (inverted lists of 8-bit codes) and 'hnsw' (a graph over 8-bit codes). A
compressed search asks its index for `RERANK` candidates and scores them exactly from the float16 directions
(memory-mapped in a large database), so its scores are exact and only its recall is approximate. A property
search is one search over an index of the summed vectors, built on first use, of the database's kind.

A build writes a new data folder, then replaces the manifest atomically, then deletes the old data folder: a
reader sees the old database or the new one, never a mixture, and an interrupted build leaves the old one intact.
No file is ever changed in place. Opening a database checks the manifest's own hash and every data file's size
and SHA-256; a damaged one is refused with the command that rebuilds it (and that command does rebuild: a
rebuild never reuses a damaged database). A database up to `MAP_ABOVE_BYTES` is read into memory, so nothing
another process does to the files afterwards can hurt a reader; a larger one is memory-mapped, and each search
first checks that its mapped files are still the ones that were verified (size, modification time, inode).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import faiss
import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from .decompose import decompose_image, normalise_layers
from .engines import HeadsTask, LocalEngine, RayEngine, load_block, run_blocks, shard_path
from .errors import ImageError, InterpretError
from .images import ImageSource, list_images
from .integrity import content_hash, describe_file, write_hashed_manifest
from .limits import MAX_NEIGHBOURS, check_number
from .models import ClipModel, layer_index, load_model
from .textspan import HeadAtlas

FORMAT = 3  # 2: every data file's size and SHA-256, and the manifest's own hash; 3: index kinds
READABLE_FORMATS = (2, 3)  # a format-2 database is a flat one
MANIFEST = "manifest.json"
BUILDING = ".building"
EMBEDDING_FILE = "embedding.faiss"
DEFAULT_LAST_LAYERS = 4
INDEX_KINDS = ("flat", "ivf-sq8", "ivf-pq", "hnsw")
FLAT_BELOW = 100_000  # images; at and above, 'ivf-pq' unless another kind is asked for
RERANK = 500  # candidates a compressed index proposes (at least 4 k), scored exactly from the float16 directions
IVF_NPROBE = 32  # inverted lists visited per search
PQ_BYTES = 32  # bytes of a product-quantised code (ivf-pq)
HNSW_LINKS, HNSW_EF_SEARCH = 32, 256
MAP_ABOVE_BYTES = 2 ** 30  # data folders larger than this are memory-mapped instead of read into memory


class DatabaseError(InterpretError):
    """A database that is missing, damaged, or built for another model or with other settings."""


class Neighbour(NamedTuple):
    path: Path
    score: float


def default_layers(model: ClipModel) -> tuple[int, ...]:
    """The last `DEFAULT_LAST_LAYERS` layers: where the heads that carry meaning are (Gandelsman et al.)."""
    count = model.geometry.layers
    return tuple(range(max(count - DEFAULT_LAST_LAYERS, 0), count))


def head_file(layer: int, head: int) -> str:
    return f"head_L{layer}_H{head}.faiss"


def directions_file(index_name: str) -> str:
    """The float16 directions beside a compressed index: 'head_L3_H1.faiss' -> 'head_L3_H1.f16.npy'."""
    return index_name.removesuffix(".faiss") + ".f16.npy"


def index_kind(count: int, requested: str | None = None) -> str:
    """The index kind for a database of `count` images: `requested`, else flat below `FLAT_BELOW`, else ivf-pq."""
    if requested is None:
        return "flat" if count < FLAT_BELOW else "ivf-pq"
    if requested not in INDEX_KINDS:
        raise InterpretError(f"Unknown index kind '{requested}': choose one of {', '.join(INDEX_KINDS)}.")
    return requested


def command_for(command: str, model: ClipModel, images: str = "YOUR_IMAGE_FOLDER") -> str:
    """The CLI line that runs `command` ('build-index', 'describe-heads') for `model` over a folder."""
    pretrained = f" --pretrained {model.pretrained}" if model.pretrained else ""
    return f"python -m interpret {command} --model {model.name}{pretrained} --images {images}"


def build_command(model: ClipModel, images: str = "YOUR_IMAGE_FOLDER") -> str:
    return command_for("build-index", model, images)


def rebuild_command(model: ClipModel, folder: Path, images: str = "YOUR_IMAGE_FOLDER",
                    layers: Sequence[int] | None = None, kind: str | None = None, count: int = 0) -> str:
    """The CLI line that replaces the database in `folder` with a fresh build (of the same `layers`, and index
    `kind` when it is not the default for `count` images)."""
    chosen = "" if layers is None or tuple(layers) == default_layers(model) else \
        " --layers " + " ".join(str(layer) for layer in layers)
    if kind is not None and kind != index_kind(count):
        chosen += f" --index {kind}"
    return f"{build_command(model, images)} --out {folder}{chosen} --overwrite"


# --- building ---------------------------------------------------------------------------------------------------

@dataclass
class BuildReport:
    """What a build did: rows `kept` from the previous database, `added`, `removed`, `skipped` (path, reason)."""

    out: Path
    count: int
    added: int
    kept: int
    removed: int
    skipped: list[tuple[str, str]]
    seconds: float

    def summary(self) -> str:
        return (f"{self.count} images in {self.out} ({self.added} added, {self.kept} kept, {self.removed} removed, "
                f"{len(self.skipped)} unreadable skipped) in {self.seconds:.1f} s")


def build_index(model: ClipModel, images: str | Path, out: str | Path | None = None,
                layers: Sequence[int] | None = None, batch_size: int = 32, index: str | None = None,
                overwrite: bool = False, progress: bool = True, chunk_size: int = 256,
                engine: "LocalEngine | RayEngine | None" = None) -> BuildReport:
    """Embed the images below `images` (recursively) into a database at `out` (default: `model.index_dir`).

    Incremental: images already in a sound database built with the same model and layers are kept (unless their
    size or modification time changed), removed files are dropped, new ones are added. Resumable: finished chunks
    of an interrupted build are reused. Unreadable images are skipped and listed in the manifest. `index`: the
    index kind (`INDEX_KINDS`; default: by size, see `index_kind`). `engine`
    (`engines.make_engine`): where the images are decomposed (default: here); the result is the same. A damaged
    database at `out` is rebuilt from scratch; one of other weights is refused, or replaced with `overwrite`."""
    started = time.monotonic()
    if index is not None:
        index_kind(0, index)  # an unknown kind is refused before any work
    root = Path(images).resolve()
    out = Path(out) if out is not None else model.index_dir
    layers = normalise_layers(layers, model.geometry.layers, model.label) if layers is not None else default_layers(model)
    signature = _signature(model, layers)
    files = list_images(root)  # ImageError for a missing or empty folder, before anything is written
    current = {_relative(path, root): _stat(path) for path in files}

    previous = _previous_database(out, model, signature, root, overwrite)
    kept_rows = [row for row, entry in enumerate(previous.entries) if current.get(entry["path"]) == entry["stat"]] \
        if previous else []
    kept_paths = {previous.entries[row]["path"] for row in kept_rows} if previous else set()
    todo = [path for path in current if path not in kept_paths]
    removed = (previous.count - len(kept_rows)) if previous else 0
    if previous and not todo and not removed:
        return BuildReport(out, previous.count, 0, previous.count, 0, previous.skipped, time.monotonic() - started)

    work = out / BUILDING
    chunks = list(run_blocks(engine or LocalEngine(), model, root, todo, HeadsTask(tuple(layers)), batch_size,
                             chunk_size, work, {"signature": signature, "root": str(root)}, progress=progress,
                             keep_arrays=False))
    new_rows = [row for chunk in chunks for row in chunk.rows]
    skipped = [item for chunk in chunks for item in chunk.skipped]
    count = len(kept_rows) + len(new_rows)
    if count == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ImageError(f"None of the {len(files)} files in {root} could be read as an image; no database written. "
                         f"First problem: {skipped[0][1] if skipped else 'unknown'}")

    heads, embeddings = _merge(model, layers, work, chunks, previous, kept_rows, count)
    entries = ([previous.entries[row] for row in kept_rows] if kept_rows else []) + \
              [{"path": path, "stat": current[path]} for path in new_rows]
    data_name = f"data-{uuid.uuid4().hex[:12]}"
    kind = index_kind(count, index)
    data_files = _write_data(out / data_name, heads, embeddings, entries, layers, kind)
    del heads  # the memory map, before its folder goes
    manifest = {**signature, "format": FORMAT, "count": count, "dtype": "float16", "root": str(root),
                "data": data_name, "index": kind, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.monotonic() - started, 2),
                "skipped": [{"path": path, "reason": reason} for path, reason in skipped], "files": data_files}
    write_manifest(out, manifest)
    for stale in out.glob("data-*"):  # the previous database's data, and leftovers of interrupted writes
        if stale.name != data_name:
            shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return BuildReport(out, count, len(new_rows), len(kept_rows), removed, skipped, time.monotonic() - started)


def _merge(model: ClipModel, layers: tuple[int, ...], work: Path, chunks: list, previous: "ImageIndex | None",
           kept_rows: list[int], count: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows kept from `previous`, then the shards' rows: heads `[L', H, N, D]` in a memory map in `work`
    (one head's vectors contiguous; float16 as decomposed, float32 when rows are kept), embeddings `[N, D]`
    float32. One shard is in memory at a time."""
    g = model.geometry
    dtype = np.float32 if kept_rows else np.float16
    heads = np.lib.format.open_memmap(work / "merged-heads.npy", mode="w+", dtype=dtype,
                                      shape=(len(layers), g.heads, count, g.embed_dim))
    embeddings = np.empty((count, g.embed_dim), np.float32)
    offset = len(kept_rows)
    if kept_rows:
        for position, layer in enumerate(layers):
            for head in range(g.heads):
                heads[position, head, :offset] = previous.head_contributions([(layer, head)], kept_rows)
        embeddings[:offset] = previous.embeddings(rows=kept_rows)
    for number, chunk in enumerate(chunks):
        if chunk.rows:
            block = load_block(shard_path(work, number))
            if block is None:
                raise DatabaseError(f"The shard {shard_path(work, number)} went missing during the build; run it "
                                    "again (finished shards are kept).")
            heads[:, :, offset:offset + len(block.rows)] = block.arrays["heads"].transpose(1, 2, 0, 3)
            embeddings[offset:offset + len(block.rows)] = block.arrays["embeddings"]
            offset += len(block.rows)
    heads.flush()
    return heads, embeddings


def write_manifest(out: Path, manifest: dict) -> None:
    """Write a database's manifest, with its own hash, atomically: the moment the database changes."""
    write_hashed_manifest(out / MANIFEST, manifest, "manifest_sha256")


def _signature(model: ClipModel, layers: tuple[int, ...]) -> dict:
    g = model.geometry
    return {"model": model.name, "pretrained": model.pretrained, "label": model.label,
            "weights_sha256": model.weights_hash, "open_clip": open_clip.__version__, "layers": list(layers),
            "heads": g.heads, "dim": g.embed_dim}


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _stat(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def _previous_database(out: Path, model: ClipModel, signature: dict, root: Path,
                       overwrite: bool) -> "ImageIndex | None":
    """The database already at `out`, if a rebuild can extend it (sound, same weights, layers and root); refuses
    to replace another model's unless `overwrite`."""
    if not (out / MANIFEST).is_file():
        return None
    try:
        manifest = _read_manifest(out)
    except DatabaseError:
        return None  # damaged: rebuilt from scratch
    if manifest.get("weights_sha256") != signature["weights_sha256"]:
        if overwrite:
            return None  # its data folder goes once the new manifest is in place
        raise DatabaseError(f"{out} holds a database of {manifest.get('label', 'another model')} with other weights "
                            f"({str(manifest.get('weights_sha256'))[:12]}, not {model.weights_hash[:12]}); choose "
                            "another --out, or replace it with --overwrite.")
    same = manifest.get("layers") == signature["layers"] and manifest.get("root") == str(root)
    try:
        return ImageIndex.open(out, model) if same else None  # verified: a damaged one is rebuilt from scratch
    except DatabaseError:
        return None


def _write_data(folder: Path, heads: np.ndarray, embeddings: np.ndarray, entries: list[dict],
                layers: tuple[int, ...], kind: str) -> dict[str, dict]:
    """heads `[L', H, N, D]`, embeddings `[N, D]` (raw contributions, any float dtype; heads may be a memory map:
    one head is read at a time) -> the data folder (written, then renamed), with indexes of `kind`. Returns each
    file's size and SHA-256, by name."""
    temporary = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    lengths = np.empty(heads.shape[:3], np.float32)  # [L', H, N]
    _write_vectors(temporary, EMBEDDING_FILE, embeddings, kind)
    for position, layer in enumerate(layers):
        for head in range(heads.shape[1]):
            vectors = np.asarray(heads[position, head], dtype=np.float32)
            lengths[position, head] = np.linalg.norm(vectors, axis=-1)
            _write_vectors(temporary, head_file(layer, head), vectors, kind)
    np.save(temporary / "lengths.npy", lengths)
    (temporary / "files.json").write_text(json.dumps(entries))
    described = {path.name: describe_file(path) for path in sorted(temporary.iterdir())}
    os.replace(temporary, folder)
    return described


def _write_vectors(folder: Path, name: str, vectors: np.ndarray, kind: str) -> None:
    """The search index of `vectors` `[N, D]` (their directions), and for a compressed kind the float16
    directions beside it."""
    unit = _unit(vectors)
    faiss.write_index(vector_index(unit, kind), str(folder / name))
    if kind != "flat":
        np.save(folder / directions_file(name), unit.astype(np.float16))


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def vector_index(unit: np.ndarray, kind: str = "flat") -> faiss.Index:
    """An inner-product index of `kind` over unit vectors `[N, D]` float32 (see the module's docstring)."""
    count, dim = unit.shape
    if kind == "flat":
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    elif kind == "hnsw":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    else:
        lists = max(1, min(int(2 * np.sqrt(count)), count // 39))  # FAISS wants >= 39 training points a list
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf-sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        else:
            sub = PQ_BYTES if dim % PQ_BYTES == 0 else next(m for m in range(PQ_BYTES, 0, -1) if dim % m == 0)
            bits = 8 if count >= 256 * 39 else max(1, min(4, int(np.log2(count))))  # 2^bits centroids need points
            index = faiss.IndexIVFPQ(quantizer, dim, lists, sub, bits, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        lists = index.nlist if isinstance(index, faiss.IndexIVF) else 1
        sample = np.random.default_rng(0).choice(count, size=min(count, max(256 * 256, 64 * lists)), replace=False)
        index.train(unit[np.sort(sample)])
    index.add(unit)
    _set_search_effort(index)
    return index


def search_index(index: faiss.Index, vector: np.ndarray, k: int,
                 exact: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores `[<=k]`, rows `[<=k]`), best first, of unit `vector` `[D]` against `index`. With `exact` (rows ->
    their unit vectors `[n, D]` float32), a compressed index proposes `RERANK` candidates (at least 4 k) and they
    are scored exactly."""
    if exact is None:
        scores, rows = index.search(vector[None], min(k, index.ntotal))
        found = rows[0] >= 0
        return scores[0][found], rows[0][found]
    _, candidates = index.search(vector[None], min(max(RERANK, 4 * k), index.ntotal))
    candidates = np.sort(candidates[0][candidates[0] >= 0])  # in row order: memory-mapped reads go forward
    scores = exact(candidates) @ vector
    best = np.argsort(-scores, kind="stable")[:k]
    return scores[best], candidates[best]


def _set_search_effort(index: faiss.Index) -> None:
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(IVF_NPROBE, index.nlist)
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = HNSW_EF_SEARCH


def _read_manifest(folder: Path, model: ClipModel | None = None) -> dict:
    """The manifest of the database in `folder`, checked against its own hash; `model` names the rebuild command
    in the message."""
    path = folder / MANIFEST
    if not path.is_file():
        raise DatabaseError(f"There is no database in {folder} (no {MANIFEST}).")
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") not in READABLE_FORMATS:
            raise ValueError(f"format {manifest.get('format')!r}, not {FORMAT}: built by another version")
        if manifest.get("manifest_sha256") != content_hash(manifest, "manifest_sha256"):
            raise ValueError("its content does not match its hash")
        if not isinstance(manifest.get("count"), int) or not isinstance(manifest.get("files"), dict):
            raise ValueError("no image count or file list")
        return manifest
    except (OSError, ValueError, AttributeError, RecursionError) as error:
        command = rebuild_command(model, folder) if model is not None else f"build-index --out {folder} --overwrite"
        raise DatabaseError(f"The database manifest in {folder} cannot be used ({error}). Rebuild it:  "
                            f"{command}") from None


def load_head_labels(model: ClipModel, folder: Path | None = None) -> HeadAtlas:
    """The head labels of `model` from `folder` (default: its index folder); a clear error when they are missing
    or were made with other weights."""
    path = Path(folder or model.index_dir) / "head_labels.json"
    command = command_for("describe-heads", model)
    if not path.is_file():
        raise InterpretError(f"No head descriptions for {model.label} yet. Build them once with:  {command}")
    atlas = HeadAtlas.load(path)
    if atlas.weights != model.weights_hash:
        raise InterpretError(f"The head labels in {path} were made with other weights than {model.label}'s; "
                             f"describe the heads again:  {command}")
    return atlas


# --- searching --------------------------------------------------------------------------------------------------

class ImageIndex:
    """An opened database: search it by head, by property, by text or by the whole embedding.

    Open once per process (`ImageIndex.open(path)`): opening verifies every file against the manifest. FAISS
    files are read on first use (into memory, their hash checked again; memory-mapped above `MAP_ABOVE_BYTES`),
    and property indexes are built in memory on first use. Searches are thread-safe."""

    def __init__(self, folder: Path, manifest: dict, model: ClipModel):
        self.folder = folder
        self.manifest = manifest
        self.model = model
        self.layers: tuple[int, ...] = tuple(manifest["layers"])
        self.count: int = manifest["count"]
        self.root = Path(manifest["root"])
        self.kind: str = manifest.get("index", "flat")  # see INDEX_KINDS; a format-2 database is flat
        if self.kind not in INDEX_KINDS:
            raise self._damaged(f"unknown index kind {self.kind!r}")
        self._data = folder / manifest["data"]
        self._files: dict[str, dict] = manifest["files"]  # name -> {"bytes", "sha256"}
        self.memory_mapped = sum(item["bytes"] for item in self._files.values()) > MAP_ABOVE_BYTES
        self._verified = {name: self._verify(name) for name in self._files}  # name -> (size, mtime, inode)
        try:
            self.entries: list[dict] = json.loads((self._data / "files.json").read_text())
            self.lengths = np.load(self._data / "lengths.npy", allow_pickle=False)  # [L', H, N]
        except (OSError, ValueError) as error:
            raise self._damaged(error) from None
        expected = (len(self.layers), manifest["heads"], self.count)
        if len(self.entries) != self.count or self.lengths.shape != expected:
            raise self._damaged(f"{len(self.entries)} files and lengths {self.lengths.shape} for {self.count} images")
        self._indexes: dict[str, faiss.Index] = {}
        self._directions: dict[str, np.ndarray] = {}  # name of an index -> its float16 directions [N, D]
        self._lock = threading.RLock()  # a property index is built from head indexes, under the same lock
        self.skipped = [(item["path"], item["reason"]) for item in manifest.get("skipped", [])]

    @classmethod
    def open(cls, path: str | Path, model: ClipModel | None = None) -> "ImageIndex":
        """Open the database in `path`, verified (see the module's docstring). With `model`, check that the
        database was built with exactly these weights; without, load the model the manifest names."""
        folder = Path(path)
        manifest = _read_manifest(folder, model)
        if model is None:
            model = load_model(manifest["model"], manifest.get("pretrained"))
        if manifest.get("weights_sha256") != model.weights_hash:
            raise DatabaseError(
                f"The database in {folder} was built for {manifest.get('label', manifest.get('model'))} "
                f"(weights {str(manifest.get('weights_sha256'))[:12]}), not for {model.label} "
                f"(weights {model.weights_hash[:12]}). Rebuild it:  {rebuild_command(model, folder)}")
        return cls(folder, manifest, model)

    def _verify(self, name: str) -> tuple[int, int, int]:
        """Check one data file against the manifest (size, then SHA-256); its (size, mtime, inode) as verified."""
        path = self._data / name
        try:
            info = path.stat()
        except OSError:
            raise self._damaged(f"{name} is missing") from None
        if info.st_size != self._files[name]["bytes"]:
            raise self._damaged(f"{name} has {info.st_size:,} bytes, not the {self._files[name]['bytes']:,} it was "
                                "written with")
        if describe_file(path)["sha256"] != self._files[name]["sha256"]:
            raise self._damaged(f"{name} does not match the SHA-256 it was written with")
        return info.st_size, info.st_mtime_ns, info.st_ino

    def _unchanged(self, name: str) -> None:
        """Refuse a data file that is no longer the one verified at opening (replaced, truncated, rewritten)."""
        try:
            info = (self._data / name).stat()
            now = (info.st_size, info.st_mtime_ns, info.st_ino)
        except OSError:
            now = None
        if now != self._verified[name]:
            raise self._damaged(f"{name} changed after the database was opened")

    @property
    def paths(self) -> list[Path]:
        return [self.root / entry["path"] for entry in self.entries]

    # --- the four searches
    def image_neighbours(self, image: ImageSource, layer: int, head: int, k: int = 10) -> list[Neighbour]:
        """Database images whose head (`layer`, `head`; negative layers count from the end) contribution points
        where the query image's does."""
        layer, position = self._position(layer, head)
        query = decompose_image(self.model, image, layers=self.layers, spatial=False).head_totals()[0, position, head]
        return self._search(head_file(layer, head), query, k)

    def text_neighbours(self, text: str, layer: int, head: int, k: int = 10) -> list[Neighbour]:
        """Database images whose head (`layer`, `head`; negative layers count from the end) contribution points
        along the text's embedding."""
        layer, _ = self._position(layer, head)
        return self._search(head_file(layer, head), self.model.encode_texts([text])[0], k)

    def property_neighbours(self, image: ImageSource, prop: str, k: int = 10,
                            atlas: HeadAtlas | None = None) -> list[Neighbour]:
        """Database images like the query in one property only: the summed contributions of the heads labelled
        `prop` (by `atlas`, default: the model's head labels), query against database."""
        heads = self.property_heads(prop, atlas)
        totals = decompose_image(self.model, image, layers=self.layers, spatial=False).head_totals()[0]
        query = sum(totals[self.layers.index(layer), head] for layer, head in heads)
        key = "property:" + ",".join(f"{layer}.{head}" for layer, head in heads)
        return self._search(key, query, k)

    def neighbours(self, image: ImageSource, k: int = 10) -> list[Neighbour]:
        """Plain CLIP neighbours: whole image embeddings."""
        return self._search(EMBEDDING_FILE, self.model.encode_images(image)[0], k)

    # --- what can be asked
    def property_heads(self, prop: str, atlas: HeadAtlas | None = None) -> list[tuple[int, int]]:
        """The heads of the database's layers labelled `prop`."""
        atlas = atlas or self.head_labels()
        heads = [(layer, head) for layer, head in atlas.heads_with(prop) if layer in self.layers]
        if not heads:
            raise InterpretError(f"No head of layers {list(self.layers)} is labelled '{prop}'. Properties there: "
                                 f"{', '.join(self.properties(atlas)) or 'none'}.")
        return heads

    def properties(self, atlas: HeadAtlas | None = None) -> list[str]:
        """Properties with at least one labelled head in the database's layers, most heads first."""
        atlas = atlas or self.head_labels()
        counts: dict[str, int] = {}
        for (layer, _), label in atlas.labels.items():
            if layer in self.layers:
                counts[label.property] = counts.get(label.property, 0) + 1
        return sorted(counts, key=lambda prop: (-counts[prop], prop))

    def head_labels(self) -> HeadAtlas:
        """The model's head labels beside the database (`head_labels.json`, written by describe-heads)."""
        return load_head_labels(self.model, self.folder)

    # --- internals
    def _position(self, layer: int, head: int) -> tuple[int, int]:
        """(the layer counted from the start, its position among the database's layers), or a message."""
        layer = layer_index(layer, self.model.geometry.layers, self.model.label)
        if layer not in self.layers or not 0 <= head < self.manifest["heads"]:
            raise InterpretError(f"The database holds heads 0..{self.manifest['heads'] - 1} of layers "
                                 f"{list(self.layers)}; head {layer}.{head} is not there (build it with --layers).")
        return layer, self.layers.index(layer)

    def _search(self, key: str, query: torch.Tensor, k: int) -> list[Neighbour]:
        k = int(check_number(k, "The number of neighbours", 1, MAX_NEIGHBOURS, integer=True))
        if self.memory_mapped:  # a mapped file that changed since it was verified could crash the process
            for name in self._files:
                self._unchanged(name)
        vector = F.normalize(query.detach().float().reshape(1, -1), dim=-1).cpu().numpy()[0]
        exact = None if self.kind == "flat" else lambda rows: self._exact_directions(key, rows)
        scores, rows = search_index(self._index(key), vector, k, exact)
        return [Neighbour(self.root / self.entries[row]["path"], float(score)) for score, row in zip(scores, rows)]

    def _exact_directions(self, key: str, rows: np.ndarray) -> np.ndarray:
        """`[len(rows), D]` float32 unit vectors of the rows, for re-ranking: read from the float16 directions, or
        for a property, summed from its heads' directions and lengths."""
        if key.startswith("property:"):
            summed = sum(self._head_directions(layer, head, rows) for layer, head in _property_heads(key))
            return _unit(summed)
        return np.asarray(self._stored_directions(key)[rows], dtype=np.float32)

    def _head_directions(self, layer: int, head: int, rows: np.ndarray) -> np.ndarray:
        """`[len(rows), D]` float32 contributions of one head (direction x length)."""
        directions = self._stored_directions(head_file(layer, head))[rows].astype(np.float32)
        return directions * self.lengths[self.layers.index(layer), head, rows, None]

    def _stored_directions(self, name: str) -> np.ndarray:
        """`[N, D]` directions of an index: float16, read into memory or memory-mapped in a large database; for a
        flat database, its index's float16 codes decoded."""
        if self.kind == "flat":  # decoded on each call: the index holds them already
            return self._index(name).reconstruct_n(0, self.count)
        with self._lock:
            if name not in self._directions:
                self._directions[name] = self._read_directions(directions_file(name))
            return self._directions[name]

    def _read_directions(self, name: str) -> np.ndarray:
        path = self._checked_path(name)
        try:
            if self.memory_mapped:
                directions = np.load(path, mmap_mode="r", allow_pickle=False)
            else:
                directions = np.load(io.BytesIO(self._verified_bytes(name)), allow_pickle=False)
        except (OSError, ValueError) as error:
            raise self._damaged(f"{name} is unreadable: {error}") from None
        if directions.shape != (self.count, self.manifest["dim"]) or directions.dtype != np.float16:
            raise self._damaged(f"{name} holds {directions.dtype} {list(directions.shape)}")
        return directions

    def _index(self, key: str) -> faiss.Index:
        with self._lock:
            if key not in self._indexes:
                if key.startswith("property:"):
                    summed = sum(self._head_directions(layer, head, np.arange(self.count))
                                 for layer, head in _property_heads(key))
                    self._indexes[key] = vector_index(_unit(summed), self.kind)
                else:
                    self._indexes[key] = self._read_index(key)
            return self._indexes[key]

    def _read_index(self, name: str) -> faiss.Index:
        """A FAISS file of the database: its verified bytes deserialised in memory, or memory-mapped where FAISS
        can (flat codes; the compressed kinds are small and read whole)."""
        path = self._checked_path(name)
        try:
            if self.memory_mapped:
                flags = faiss.IO_FLAG_READ_ONLY | (faiss.IO_FLAG_MMAP_IFC if self.kind == "flat" else 0)
                index = faiss.read_index(str(path), flags)
            else:
                index = faiss.deserialize_index(np.frombuffer(self._verified_bytes(name), dtype=np.uint8))
        except (OSError, RuntimeError) as error:
            raise self._damaged(f"{name} is unreadable: {str(error).splitlines()[-1][-120:]}") from None
        if index.ntotal != self.count or index.d != self.manifest["dim"]:
            raise self._damaged(f"{name} holds {index.ntotal} vectors of {index.d} dims")
        _set_search_effort(index)
        return index

    def _checked_path(self, name: str) -> Path:
        """A data file's path, once it is known to be in the manifest and unchanged since it was verified."""
        if name not in self._files:
            raise self._damaged(f"{name} is not in the manifest")
        self._unchanged(name)
        return self._data / name

    def _verified_bytes(self, name: str) -> bytes:
        """A data file's bytes, read into memory and checked against its SHA-256 again."""
        content = (self._data / name).read_bytes()
        if hashlib.sha256(content).hexdigest() != self._files[name]["sha256"]:
            raise self._damaged(f"{name} does not match the SHA-256 it was written with")
        return content

    def _damaged(self, detail) -> DatabaseError:
        command = rebuild_command(self.model, self.folder, str(self.root), self.layers, self.kind, self.count)
        return DatabaseError(f"The database in {self.folder} is damaged ({detail}). Rebuild it:  {command}")

    def head_contributions(self, heads: list[tuple[int, int]] | None = None,
                           rows: list[int] | None = None) -> np.ndarray:
        """`[N, len(heads), D]` float32 head contributions (direction x length); all heads gives
        `[N, L', H, D]`. `rows` picks images."""
        everything = heads is None
        heads = heads or [(layer, head) for layer in self.layers for head in range(self.manifest["heads"])]
        rows_array = np.arange(self.count) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows_array), len(heads), self.manifest["dim"]), np.float32)
        for column, (layer, head) in enumerate(heads):
            out[:, column] = self._head_directions(layer, head, rows_array)
        if everything:
            return out.reshape(len(rows_array), len(self.layers), self.manifest["heads"], -1)
        return out[:, 0] if len(heads) == 1 else out

    def embeddings(self, rows: list[int] | None = None) -> np.ndarray:
        """`[N, D]` float32 unit image embeddings (as stored; for incremental rebuilds their length is 1)."""
        rows_array = np.arange(self.count) if rows is None else np.asarray(rows, dtype=np.int64)
        return self._stored_directions(EMBEDDING_FILE)[rows_array].astype(np.float32)


def _property_heads(key: str) -> list[tuple[int, int]]:
    """'property:3.1,2.5' -> [(3, 1), (2, 5)]."""
    return [tuple(map(int, item.split("."))) for item in key.split(":", 1)[1].split(",")]
