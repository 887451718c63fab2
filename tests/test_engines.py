"""The Ray engine writes the same bytes as the local engine (Ray started here, on this machine's CPUs), resumes
from finished shards, skips unreadable images as the local one does; without Ray, a clear message."""
from __future__ import annotations

import builtins
import json

import numpy as np
import pytest

from interpret import engines
from interpret.errors import InterpretError
from interpret.index import MANIFEST, ImageIndex, build_index


@pytest.fixture(scope="module")
def toy():
    from interpret.models import load_model

    return load_model("toy")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """27 toy scenes in two folders, and one file that is not an image."""
    from interpret.toy.train import toy_scene

    folder = tmp_path_factory.mktemp("scenes")
    for number in range(27):
        target = folder / ("more" if number % 3 == 0 else ".") / f"scene{number:02d}.png"
        target.parent.mkdir(exist_ok=True)
        toy_scene(40_000 + number).image.save(target)
    (folder / "broken.png").write_bytes(b"not a picture")
    return folder


@pytest.fixture(scope="module")
def ray_here():
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def data_files(out) -> dict[str, str]:
    manifest = json.loads((out / MANIFEST).read_text())
    return {name: item["sha256"] for name, item in manifest["files"].items()}, manifest["skipped"]


def test_ray_builds_the_same_bytes_as_the_local_engine(toy, scenes, tmp_path, ray_here):
    settings = dict(layers=[2, 3], batch_size=4, chunk_size=6, progress=False)
    local = build_index(toy, scenes, tmp_path / "local", **settings)
    on_ray = build_index(toy, scenes, tmp_path / "ray", engine=engines.RayEngine(workers=2), **settings)
    assert (on_ray.count, on_ray.skipped) == (local.count, local.skipped) == (27, on_ray.skipped)
    assert [path for path, _ in on_ray.skipped] == ["broken.png"]
    assert data_files(tmp_path / "ray") == data_files(tmp_path / "local")  # every file, byte for byte
    a, b = ImageIndex.open(tmp_path / "local", toy), ImageIndex.open(tmp_path / "ray", toy)
    assert [entry["path"] for entry in a.entries] == [entry["path"] for entry in b.entries]
    assert np.array_equal(a.head_contributions(), b.head_contributions())


def test_a_ray_build_resumes_from_the_shards_of_an_interrupted_one(toy, scenes, tmp_path, ray_here, monkeypatch):
    settings = dict(layers=[3], batch_size=4, chunk_size=5, progress=False)
    calls = {"blocks": 0}
    real = engines.decompose_block

    def interrupted_after_two(*args, **kwargs):
        calls["blocks"] += 1
        if calls["blocks"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engines, "decompose_block", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_index(toy, scenes, tmp_path / "db", **settings)
    shards = sorted((tmp_path / "db" / ".building").glob("chunk-*.npz"))
    assert len(shards) == 2
    asked = []
    ray_engine = engines.RayEngine(workers=1)
    real_blocks = ray_engine.blocks
    monkeypatch.setattr(ray_engine, "blocks", lambda model, root, plan, *rest: asked.append(
        [number for number, _ in plan]) or real_blocks(model, root, plan, *rest))
    build_index(toy, scenes, tmp_path / "db", engine=ray_engine, **settings)
    assert asked == [[2, 3, 4, 5]]  # the two finished shards were not computed again
    build_index(toy, scenes, tmp_path / "reference", **settings)
    assert data_files(tmp_path / "db") == data_files(tmp_path / "reference")


def test_head_labels_on_ray_equal_the_local_ones(toy, scenes, ray_here):
    from interpret.banks import toy_bank
    from interpret.images import list_images, readable_images
    from interpret.textspan import describe_heads

    paths, _ = readable_images(list_images(scenes))
    here = describe_heads(toy, paths, toy_bank(), layers=[3], progress=False)
    there = describe_heads(toy, paths, toy_bank(), layers=[3], progress=False, engine=engines.RayEngine(workers=2))
    assert here.labels == there.labels


def test_without_ray_the_engine_says_how_to_install_it(toy, scenes, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(InterpretError, match="requirements-ray.txt"):
        build_index(toy, scenes, tmp_path / "db", layers=[3], progress=False, engine=engines.make_engine("ray"))
    with pytest.raises(InterpretError, match="Unknown engine 'spark'"):
        engines.make_engine("spark")
    with pytest.raises(InterpretError, match="--workers"):
        engines.make_engine("ray", workers=0)


def test_the_neurons_and_sae_tasks_on_ray_give_the_local_engine_s_arrays(toy, scenes, ray_here):
    """The neurons' streaming passes (`NeuronTask`) and an SAE's token states (`DictionaryInputsTask`) run on Ray as the
    database's task does: the same arrays, in the same order (the passes reduce the blocks as they come)."""
    import numpy as np

    from interpret.dictionaries import DictionaryInputsTask
    from interpret.images import list_images
    from interpret.neurons import NeuronTask

    names = [path.relative_to(scenes).as_posix() for path in list_images(scenes)]
    for task, key in ((NeuronTask(1), "coefficients"), (DictionaryInputsTask("transcoder", (0, 2)), "layer-2")):
        arrays = [np.concatenate([block.arrays[key] for block in engines.run_blocks(
            engine, toy, scenes, names, task, 4, 14, progress=False)])
            for engine in (engines.LocalEngine(), engines.RayEngine(workers=1))]
        assert len(arrays[0]) == 27 and np.allclose(*arrays, atol=1e-6), key
