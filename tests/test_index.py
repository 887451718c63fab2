"""Image databases: build (atomic, resumable, incremental), search by head / text / property / embedding,
and clear refusals of bad input."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from interpret import index as index_module
from interpret import engines
from interpret.decompose import decompose_image
from interpret.errors import ImageError, InterpretError
from interpret.index import MANIFEST, DatabaseError, ImageIndex, build_index
from interpret.textspan import HeadAtlas, HeadLabel
from interpret.models import model_from_config
from tests.conftest import TINY_LAYERSCALE_CONFIG, randomise_small_parameters


def draw(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture()
def folder(tmp_path):
    images = tmp_path / "images"
    for i in range(7):
        draw(images / ("sub" if i % 2 else "") / f"img{i}.png", i)
    return images


def test_build_stores_every_head_and_searches_find_the_image_itself(tiny_model, folder, tmp_path):
    report = build_index(tiny_model, folder, tmp_path / "db", layers=[1, 2], batch_size=3, progress=False)
    assert (report.count, report.added, report.skipped) == (7, 7, [])
    manifest = json.loads((tmp_path / "db" / MANIFEST).read_text())
    assert manifest["layers"] == [1, 2] and manifest["dtype"] == "float16" and manifest["count"] == 7
    assert manifest["weights_sha256"] == tiny_model.weights_hash and manifest["open_clip"]

    database = ImageIndex.open(tmp_path / "db", tiny_model)
    query = folder / "sub" / "img3.png"
    for results in (database.image_neighbours(query, 2, 1, k=3), database.neighbours(query, k=3)):
        assert len(results) == 3 and results[0].path == query and results[0].score == pytest.approx(1, abs=2e-3)
        assert results[0].score >= results[1].score >= results[2].score

    # the stored contributions are the decomposition's, to float16 precision
    stored = database.head_contributions()  # [N, L', H, D]
    order = [database.paths.index(path) for path in sorted(database.paths)]
    exact = decompose_image(tiny_model, sorted(database.paths), layers=[1, 2], spatial=False).head_totals()
    assert np.allclose(stored[order], exact.numpy(), rtol=2e-3, atol=2e-3 * float(exact.abs().max()))


def test_text_neighbours_rank_by_the_heads_cosine_with_the_text(tiny_model, folder, tmp_path):
    build_index(tiny_model, folder, tmp_path / "db", layers=[2], progress=False)
    database = ImageIndex.open(tmp_path / "db", tiny_model)
    results = database.text_neighbours("a red square", 2, 0, k=7)
    text = tiny_model.encode_texts(["a red square"])[0]
    heads = decompose_image(tiny_model, [r.path for r in results], layers=[2], spatial=False).head_totals()[:, 0, 0]
    expected = (F.normalize(heads, dim=-1) @ text).numpy()
    assert np.allclose([r.score for r in results], expected, atol=2e-3)
    assert list(np.argsort(-expected, kind="stable")) == list(range(7)) or np.all(np.diff(expected) <= 2e-3)


def test_property_neighbours_use_the_sum_of_the_labelled_heads(tiny_model, folder, tmp_path):
    build_index(tiny_model, folder, tmp_path / "db", layers=[1, 2], progress=False)
    database = ImageIndex.open(tmp_path / "db", tiny_model)
    labels = {(l, h): HeadLabel(l, h, [], [], [], 0.0, "colour" if (l, h) in {(1, 0), (2, 2)} else "shape", 1.0)
              for l in range(3) for h in range(3)}
    atlas = HeadAtlas("tiny", "test", 1, 1, 1, labels)
    assert database.property_heads("colour", atlas) == [(1, 0), (2, 2)]
    assert database.properties(atlas) == ["shape", "colour"]
    query = folder / "img0.png"
    results = database.property_neighbours(query, "colour", k=7, atlas=atlas)
    parts = decompose_image(tiny_model, [query] + [r.path for r in results], layers=[1, 2], spatial=False)
    summed = F.normalize(parts.head_totals()[:, 0, 0] + parts.head_totals()[:, 1, 2], dim=-1)
    assert np.allclose([r.score for r in results], (summed[1:] @ summed[0]).numpy(), atol=3e-3)
    with pytest.raises(InterpretError, match="No head .* labelled 'texture'.*shape, colour"):
        database.property_neighbours(query, "texture", atlas=atlas)


def test_rebuild_is_incremental_and_skips_unreadable_files(tiny_model, folder, tmp_path):
    out = tmp_path / "db"
    build_index(tiny_model, folder, out, layers=[2], progress=False)
    first_data = json.loads((out / MANIFEST).read_text())["data"]
    assert build_index(tiny_model, folder, out, layers=[2], progress=False).added == 0  # up to date
    (folder / "img0.png").unlink()
    draw(folder / "new" / "img9.png", 9)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    report = build_index(tiny_model, folder, out, layers=[2], progress=False)
    assert (report.count, report.added, report.kept, report.removed) == (7, 1, 6, 1)
    assert [path for path, _ in report.skipped] == ["broken.jpg"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["skipped"][0]["path"] == "broken.jpg" and "could not be decoded" in manifest["skipped"][0]["reason"]
    assert not (out / first_data).exists() and not (out / ".building").exists()
    database = ImageIndex.open(out, tiny_model)
    assert sorted(p.name for p in database.paths) == ["img1.png", "img2.png", "img3.png", "img4.png", "img5.png",
                                                       "img6.png", "img9.png"]
    new = folder / "new" / "img9.png"
    assert database.image_neighbours(new, 2, 0, k=1)[0].path == new
    kept = folder / "img2.png"
    assert database.image_neighbours(kept, 2, 2, k=1)[0].path == kept


def test_an_interrupted_build_resumes_and_leaves_the_old_database_readable(tiny_model, folder, tmp_path, monkeypatch):
    out = tmp_path / "db"
    calls = {"chunks": 0}
    real = engines.decompose_block

    def failing_after_two(*args, **kwargs):
        calls["chunks"] += 1
        if calls["chunks"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engines, "decompose_block", failing_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_index(tiny_model, folder, out, layers=[2], chunk_size=2, progress=False)
    assert not (out / MANIFEST).exists()  # nothing half-built is visible
    assert len(list((out / ".building").glob("chunk-*.npz"))) == 2
    calls["chunks"] = 10  # the rerun embeds only the two missing chunks
    build_index(tiny_model, folder, out, layers=[2], chunk_size=2, progress=False)
    assert calls["chunks"] == 12
    assert ImageIndex.open(out, tiny_model).count == 7


def test_a_database_for_another_model_is_refused(tiny_model, folder, tmp_path):
    build_index(tiny_model, folder, tmp_path / "db", layers=[2], progress=False)
    torch.manual_seed(1)
    other = randomise_small_parameters(model_from_config(TINY_LAYERSCALE_CONFIG, name="tiny-layerscale"), seed=1)
    with pytest.raises(DatabaseError, match="was built for .* not for .*Rebuild it"):
        ImageIndex.open(tmp_path / "db", other)
    with pytest.raises(DatabaseError, match="holds a database of .* other weights.*--overwrite"):
        build_index(other, folder, tmp_path / "db", layers=[2], progress=False)
    old_data = json.loads((tmp_path / "db" / MANIFEST).read_text())["data"]
    report = build_index(other, folder, tmp_path / "db", layers=[2], overwrite=True, progress=False)
    assert (report.added, report.kept) == (7, 0) and not (tmp_path / "db" / old_data).exists()
    assert ImageIndex.open(tmp_path / "db", other).count == 7


def test_head_labels_must_come_from_the_same_weights(tiny_model, tmp_path, monkeypatch):
    from interpret.index import load_head_labels

    monkeypatch.setattr(type(tiny_model), "index_dir", property(lambda self: tmp_path / "labels"))
    with pytest.raises(InterpretError, match="No head descriptions for .*describe-heads --model tiny-layerscale"):
        load_head_labels(tiny_model)
    label = HeadLabel(0, 0, ["x"], ["colour"], [0.5], 0.5, "colour", 1.0)
    HeadAtlas("tiny", "test", 1, 1, 1, {(0, 0): label}, "0" * 64).save(tmp_path / "labels" / "head_labels.json")
    with pytest.raises(InterpretError, match="made with other weights"):
        load_head_labels(tiny_model)
    HeadAtlas("tiny", "test", 1, 1, 1, {(0, 0): label}, tiny_model.weights_hash).save(
        tmp_path / "labels" / "head_labels.json")
    assert load_head_labels(tiny_model).heads_with("colour") == [(0, 0)]


@pytest.mark.parametrize("damage", ["truncated index", "missing file", "bad manifest", "no manifest"])
def test_damaged_databases_give_clear_messages(tiny_model, folder, tmp_path, damage):
    out = tmp_path / "db"
    build_index(tiny_model, folder, out, layers=[2], progress=False)
    data = out / json.loads((out / MANIFEST).read_text())["data"]
    if damage == "truncated index":
        path = data / "head_L2_H1.faiss"
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "missing file":
        (data / "lengths.npy").unlink()
    elif damage == "bad manifest":
        (out / MANIFEST).write_text("{not json")
    else:
        (out / MANIFEST).unlink()
    with pytest.raises(DatabaseError, match="damaged|no database|There is no database"):
        ImageIndex.open(out, tiny_model).image_neighbours(folder / "img0.png", 2, 1)


def flip_byte(path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))


def test_a_flipped_byte_in_any_database_file_is_refused_and_a_rebuild_mends_it(tiny_model, folder, tmp_path):
    out = tmp_path / "db"
    build_index(tiny_model, folder, out, layers=[2], progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    data = out / manifest["data"]
    assert set(manifest["files"]) == {path.name for path in data.iterdir()}
    for path in [out / MANIFEST, *sorted(data.iterdir())]:
        original = path.read_bytes()
        flip_byte(path)
        with pytest.raises(DatabaseError, match=r"damaged|cannot be used") as refused:
            ImageIndex.open(out, tiny_model)
        assert "build-index" in str(refused.value) and "--overwrite" in str(refused.value), path.name
        path.write_bytes(original)
    flip_byte(data / "head_L2_H1.faiss")
    report = build_index(tiny_model, folder, out, layers=[2], progress=False)  # what the message's command runs
    assert (report.added, report.kept) == (7, 0)
    assert len(ImageIndex.open(out, tiny_model).image_neighbours(folder / "img0.png", 2, 1, k=3)) == 3


@pytest.mark.parametrize("kind, changed", [("flat", "head_L2_H1.faiss"), ("ivf-pq", "head_L2_H1.f16.npy")])
def test_memory_mapped_files_that_change_after_opening_are_refused(tiny_model, folder, tmp_path, monkeypatch, kind,
                                                                   changed):
    out = tmp_path / "db"
    build_index(tiny_model, folder, out, layers=[2], index=kind, progress=False)
    in_memory = ImageIndex.open(out, tiny_model)
    monkeypatch.setattr(index_module, "MAP_ABOVE_BYTES", 0)
    mapped = ImageIndex.open(out, tiny_model)
    assert mapped.memory_mapped and not in_memory.memory_mapped
    query = folder / "img0.png"
    assert mapped.image_neighbours(query, 2, 1, k=3) == in_memory.image_neighbours(query, 2, 1, k=3)
    path = out / mapped.manifest["data"] / changed
    replacement = path.with_name("replacement")
    replacement.write_bytes(path.read_bytes()[:200])
    replacement.replace(path)  # a new, shorter file under the same name (the mapped one stays intact)
    with pytest.raises(DatabaseError, match="changed after the database was opened"):
        mapped.image_neighbours(query, 2, 1, k=3)
    assert len(in_memory.image_neighbours(query, 2, 1, k=3)) == 3  # its verified copy is in memory


def test_bad_folders_leave_nothing_behind(tiny_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="holds no images"):
        build_index(tiny_model, empty, tmp_path / "db", progress=False)
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(3):
        (junk / f"file{i}.png").write_text("not an image")
    with pytest.raises(ImageError, match="None of the 3 files"):
        build_index(tiny_model, junk, tmp_path / "db", progress=False)
    assert not (tmp_path / "db").exists() or not any((tmp_path / "db").iterdir())
    with pytest.raises(ImageError, match="not a folder"):
        build_index(tiny_model, tmp_path / "nowhere", tmp_path / "db", progress=False)


def test_unknown_heads_are_refused(tiny_model, folder, tmp_path):
    build_index(tiny_model, folder, tmp_path / "db", layers=[2], progress=False)
    database = ImageIndex.open(tmp_path / "db", tiny_model)
    with pytest.raises(InterpretError, match="head 0.1 is not there"):
        database.text_neighbours("a dog", 0, 1)
    assert database.text_neighbours("a dog", -1, 1, k=3) == database.text_neighbours("a dog", 2, 1, k=3)
    with pytest.raises(InterpretError, match="there is no layer -4"):
        database.text_neighbours("a dog", -4, 1)


@pytest.mark.parametrize("kind", ["ivf-sq8", "ivf-pq", "hnsw"])
def test_compressed_databases_find_what_the_flat_one_finds_with_exact_scores(tiny_model, tmp_path, kind):
    images = tmp_path / "many"
    for i in range(80):
        draw(images / f"img{i:03d}.png", 100 + i)
    build_index(tiny_model, images, tmp_path / "flat", layers=[1, 2], progress=False)
    build_index(tiny_model, images, tmp_path / kind, layers=[1, 2], index=kind, progress=False)
    flat, compressed = ImageIndex.open(tmp_path / "flat", tiny_model), ImageIndex.open(tmp_path / kind, tiny_model)
    assert (flat.kind, compressed.kind) == ("flat", kind)
    assert json.loads((tmp_path / kind / MANIFEST).read_text())["index"] == kind
    query = images / "img005.png"
    labels = {(l, h): HeadLabel(l, h, [], [], [], 0.0, "colour" if (l, h) in {(1, 0), (2, 2)} else "shape", 1.0)
              for l in range(3) for h in range(3)}
    atlas = HeadAtlas("tiny", "test", 1, 1, 1, labels)
    for search in (lambda db: db.image_neighbours(query, 2, 1, k=5), lambda db: db.text_neighbours("a dog", 2, 0, k=5),
                   lambda db: db.neighbours(query, k=5), lambda db: db.property_neighbours(query, "colour", 5, atlas)):
        expected, found = search(flat), search(compressed)
        assert [n.path for n in found] == [n.path for n in expected]  # 80 images: every candidate is re-ranked
        assert [n.score for n in found] == pytest.approx([n.score for n in expected], abs=5e-4)  # float16
    assert np.array_equal(compressed.head_contributions(rows=[3, 7]), flat.head_contributions(rows=[3, 7]))


def test_the_index_kind_follows_the_size_unless_asked(tiny_model, folder, tmp_path):
    from interpret.index import FLAT_BELOW, index_kind

    assert index_kind(FLAT_BELOW - 1) == "flat" and index_kind(FLAT_BELOW) == "ivf-pq"
    assert index_kind(10, "hnsw") == "hnsw"
    with pytest.raises(InterpretError, match="Unknown index kind 'lsh'.*flat, ivf-sq8, ivf-pq, hnsw"):
        build_index(tiny_model, folder, tmp_path / "db", layers=[2], index="lsh", progress=False)
