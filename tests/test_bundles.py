"""Model bundles: built whole (labels, database, thumbnails, hashed manifest), found through INTERPRET_BUNDLES
(a folder, or hf://datasets/... fetched by huggingface_hub, here from a local stand-in), refused when damaged,
partial or made for other weights, and served by a fresh app process to gradio_client."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from interpret import bundles
from interpret.bundles import build_bundle
from interpret.folders import BUNDLE_MANIFEST, BundleError, model_folder, verify_bundle
from interpret.index import ImageIndex
from interpret.models import load_model
from tests.conftest import ROOT, need_shared_data

EXAMPLES = ROOT / "assets" / "examples"


@pytest.fixture(scope="module")
def toy():
    return load_model("toy")


@pytest.fixture(scope="module")
def toy_bundle(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles")
    return build_bundle(toy, EXAMPLES, out, bank="toy", progress=False)


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundles" / bundle.name
    shutil.copytree(bundle, target)
    return target


def test_a_bundle_holds_labels_database_thumbnails_and_a_manifest(toy, toy_bundle):
    manifest = verify_bundle(toy_bundle, toy)
    assert toy_bundle.name == toy.slug
    assert manifest["images"] == 6 and manifest["weights_sha256"] == toy.weights_hash and manifest["bank"] == "toy"
    assert manifest["layers"] == [0, 1, 2, 3] and manifest["open_clip"]
    assert manifest["neuron_layers"] == [0, 1, 2] and "neurons/layer-02/neurons.safetensors" in manifest["files"]
    thumbnails = sorted((toy_bundle / "thumbnails").glob("*.webp"))
    assert len(thumbnails) == 6 and all(max(Image.open(path).size) <= bundles.THUMBNAIL_SIDE for path in thumbnails)
    assert {"manifest.json", "head_labels.json"} <= set(manifest["files"])
    assert all(name in manifest["files"] for name in (f"thumbnails/{path.name}" for path in thumbnails))
    assert ImageIndex.open(toy_bundle, toy).count == 6


@pytest.mark.parametrize("damage, message", [
    ("flipped byte", "damaged: head_labels.json does not match"),
    ("missing file", "partial: thumbnails/toy-1003.png.webp is missing"),
    ("other weights", "made for other weights"),
    ("edited manifest", "bundle.json cannot be used"),
    ("no manifest", "not a bundle"),
])
def test_damaged_partial_or_foreign_bundles_are_refused_naming_the_file(toy, toy_bundle, tmp_path, damage,
                                                                         message):
    bundle = copy_of(toy_bundle, tmp_path)
    manifest_path = bundle / BUNDLE_MANIFEST
    if damage == "flipped byte":
        content = bytearray((bundle / "head_labels.json").read_bytes())
        content[len(content) // 2] ^= 1
        (bundle / "head_labels.json").write_bytes(bytes(content))
    elif damage == "missing file":
        (bundle / "thumbnails" / "toy-1003.png.webp").unlink()
    elif damage == "other weights":
        manifest = json.loads(manifest_path.read_text())
        manifest["weights_sha256"] = "0" * 64
        bundles._write_manifest(bundle, {k: v for k, v in manifest.items() if k != "bundle_sha256"})
    elif damage == "edited manifest":
        manifest_path.write_text(manifest_path.read_text().replace('"images": 6', '"images": 7'))
    else:
        manifest_path.unlink()
    with pytest.raises(BundleError, match=message):
        verify_bundle(bundle, toy)


def test_bundles_are_found_in_a_folder_named_by_INTERPRET_BUNDLES(toy, toy_bundle, tmp_path, monkeypatch):
    bundle = copy_of(toy_bundle, tmp_path)
    monkeypatch.setattr(type(toy), "index_dir", property(lambda self: tmp_path / "empty" / self.slug))
    monkeypatch.delenv("INTERPRET_BUNDLES", raising=False)
    assert model_folder(toy) == tmp_path / "empty" / toy.slug  # nothing anywhere: where a build would go
    monkeypatch.setenv("INTERPRET_BUNDLES", str(bundle.parent))
    assert model_folder(toy) == bundle
    (bundle / "head_labels.json").write_text("{}")  # changed after verification: verified again, and refused
    (bundle / BUNDLE_MANIFEST).touch()
    with pytest.raises(BundleError, match="head_labels.json"):
        model_folder(toy)


def test_hf_bundles_are_fetched_with_huggingface_hub_from_a_local_stand_in(toy, toy_bundle, tmp_path, monkeypatch):
    import huggingface_hub

    repository = tmp_path / "hub" / "someone" / "clip-bundles"  # what the stand-in hub holds
    shutil.copytree(toy_bundle, repository / toy.slug)
    (repository / "ViT-B-32__openai").mkdir()
    (repository / "ViT-B-32__openai" / "big.bin").write_bytes(b"x" * 1000)
    calls = []

    def snapshot_download(repo_id, repo_type, allow_patterns, cache_dir, **kwargs):  # copies what was asked for
        calls.append((repo_id, repo_type, allow_patterns))
        target = Path(cache_dir) / "snapshot"
        for path in (tmp_path / "hub" / repo_id).rglob("*"):
            relative = path.relative_to(tmp_path / "hub" / repo_id).as_posix()
            if path.is_file() and any(Path(relative).match(pattern) or relative.startswith(pattern[:-1])
                                      for pattern in allow_patterns):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / relative)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(type(toy), "index_dir", property(lambda self: tmp_path / "empty" / self.slug))
    monkeypatch.setenv("INTERPRET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INTERPRET_BUNDLES", "hf://datasets/someone/clip-bundles")
    folder = model_folder(toy)
    assert calls == [("someone/clip-bundles", "dataset", [f"{toy.slug}/*"])]
    assert folder.is_relative_to(tmp_path / "home") and (folder / BUNDLE_MANIFEST).is_file()
    assert not (folder.parent / "ViT-B-32__openai").exists()  # only this model's folder was fetched

    def offline(**kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(BundleError, match="Could not fetch the bundle of toy .* no network"):
        model_folder(toy)


def test_publishing_uploads_each_checked_bundle(toy_bundle, tmp_path, monkeypatch):
    import huggingface_hub

    uploads = []
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kwargs: uploads.append(kwargs))
    assert bundles.publish(toy_bundle.parent, "hf://datasets/someone/clip-bundles") == [toy_bundle.name]
    assert uploads[0]["repo_id"] == "someone/clip-bundles" and uploads[0]["path_in_repo"] == toy_bundle.name
    damaged = copy_of(toy_bundle, tmp_path)
    (damaged / "head_labels.json").write_text("{}")
    with pytest.raises(BundleError, match="head_labels.json"):
        bundles.publish(damaged, "hf://datasets/someone/clip-bundles")
    with pytest.raises(BundleError, match="hf://datasets/ORG/REPO"):
        bundles.publish(toy_bundle, "s3://bucket")


def test_the_cli_builds_a_bundle(tmp_path, capsys):
    from interpret.cli import main

    assert main(["bundle", "--model", "toy", "--images", str(EXAMPLES), "--out", str(tmp_path),
                 "--layers", "3"]) == 0
    assert "toy (bundled): bundle in" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "toy" / BUNDLE_MANIFEST).read_text())
    assert manifest["layers"] == [3] and manifest["images"] == 6
    assert main(["bundle", "--model", "toy"]) == 2 and "--images DIR and --out DIR" in capsys.readouterr().err


def test_a_fresh_app_serves_a_random_init_model_from_a_bundle(tmp_path):
    """ViT-B-32 with random weights, 20 ImageNet sample photos; the app finds the bundle through INTERPRET_BUNDLES,
    with empty indexes and cache, and the originals gone (the gallery shows the bundle's thumbnails)."""
    samples = need_shared_data("images/imagenet-sample")
    from gradio_client import Client, handle_file

    from interpret.banks import general_bank
    from tests.local_server import start_app, stop_app

    images = tmp_path / "photos"
    images.mkdir()
    for path in sorted(samples.glob("*.JPEG"))[:20]:
        shutil.copy(path, images / path.name)
    bank = tmp_path / "bank.txt"  # a part of the general bank keeps the test quick
    texts = general_bank()
    bank.write_text("\n".join(f"{tag}\t{text}" for text, tag in list(zip(texts.texts, texts.tags))[::24]))
    model = load_model("ViT-B-32")
    folder = build_bundle(model, images, tmp_path / "bundles", bank=str(bank), progress=False, neuron_layers=[9])
    labels = json.loads((folder / "head_labels.json").read_text())["labels"]
    prop = next(label["property"] for label in labels if label["layer"] >= 8)
    query = images / "query.jpg"
    shutil.copy(sorted(images.glob("*.JPEG"))[3], query)
    kept = tmp_path / "query.jpg"
    shutil.copy(query, kept)
    shutil.rmtree(images)  # the host has the bundle, not the collection

    process, url = start_app(tmp_path / "indexes", INTERPRET_BUNDLES=str(tmp_path / "bundles"),
                             INTERPRET_HOME=str(tmp_path / "home"))
    try:
        client = Client(url, verbose=False)
        label = "ViT-B-32 / random init"
        summary, table, grid = client.predict(label, 11, 4, api_name="/head_atlas")
        assert summary.startswith("**Head 11.4**") and len(table["data"]) >= 1
        gallery, summary = client.predict(label, handle_file(str(kept)), prop, 5, api_name="/property_neighbours")
        assert len(gallery) == 5 and "file missing" not in json.dumps(gallery) and "of 20 images" in summary
        gallery, summary = client.predict(label, handle_file(str(kept)), -1, 4, 5, api_name="/image_neighbours")
        assert len(gallery) == 5 and "Head 11.4" in summary and "missing" not in summary
        gallery, summary = client.predict(label, "a dog", 11, 0, 3, api_name="/text_neighbours")
        assert len(gallery) == 3 and "'a dog'" in summary
        summary, words, gallery, grid = client.predict(label, 9, 7, api_name="/neuron")  # from its thumbnails
        assert "Neuron 7 of layer 9" in summary and len(gallery) == 12 and words["data"]
    finally:
        stop_app(process)


def test_the_build_estimate_counts_what_the_images_cost(toy, tmp_path):
    """Large photos cost more to read, preprocess and thumbnail than small scenes (less than they did: they are
    decoded reduced): the estimate measures a few of the images themselves (a phone's 3000 px photos were
    estimated as 64 px ones). An image that cannot be read is left out of the measure, as the build leaves it
    out. (benchmarks/build_estimate.py compares the estimate with the build from 0.1 to 24 megapixels.)"""
    from interpret.toy.train import toy_scene

    small, large = tmp_path / "small.png", tmp_path / "large.jpg"
    toy_scene(1).image.save(small)
    toy_scene(1).image.resize((3000, 3000)).save(large, quality=95)
    _, with_small = bundles.estimate_build(toy, 100, "toy", [small] * 2, neuron_layers=())
    _, with_large = bundles.estimate_build(toy, 100, "toy", [large] * 2, neuron_layers=())
    _, with_broken = bundles.estimate_build(toy, 100, "toy", [b"not an image", small.read_bytes()], neuron_layers=())
    _, model_only = bundles.estimate_build(toy, 100, "toy", neuron_layers=())
    assert with_large > with_small and model_only <= with_broken
    seconds, per_image = bundles.estimate_build(toy, 1000, "toy", [small], neuron_layers=())
    assert seconds > 1000 * per_image  # and the bank's texts and TextSpan over every head, once


def test_the_build_estimate_counts_the_neurons_and_the_sae_asked_for(toy):
    """Each neuron layer and SAE adds its own cost an image and its own fixed cost (describing with the bank, the
    SAE's start); the default is the build's: the neurons of `default_neuron_layers`, no SAE."""
    plain = bundles.estimate_build(toy, 100, "toy", neuron_layers=())
    one_layer = bundles.estimate_build(toy, 100, "toy", neuron_layers=[2])
    everything = bundles.estimate_build(toy, 100, "toy", neuron_layers=[2], feature_layers=[1])
    assert plain[1] < one_layer[1] < everything[1] and plain[0] < one_layer[0] < everything[0]
    assert bundles.estimate_build(toy, 100, "toy") == bundles.estimate_build(toy, 100, "toy", neuron_layers=[0, 1, 2])
    with_images = bundles.estimate_build(toy, 1100, "toy", neuron_layers=[2], feature_layers=[1])
    assert with_images[0] - everything[0] == pytest.approx(1000 * everything[1])


def test_a_zips_images_are_sampled_within_their_declared_sizes(tmp_path):
    import zipfile

    from interpret.archives import plan_archive, sample_images

    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as writing:
        for number in range(10):
            writing.writestr(f"folder/{number}.png", bytes([number]) * (number + 1))
    members, _ = plan_archive(archive)
    samples = sample_images(archive, members, 4)
    assert len(samples) == 4 and samples[0] == b"\x00" and all(len(set(sample)) == 1 for sample in samples)


def test_loaded_files_load_once_again_when_a_file_or_one_beside_it_changes_and_keep_the_recent(tmp_path):
    """`LoadedFiles` (databases, head labels, SAEs with their atlases, neuron directions): one load per version of
    the files, and at most `kept` loaded at once, the least recently used out first."""
    import os

    from interpret.integrity import LoadedFiles

    loads = []
    files = LoadedFiles(2)
    main, beside = tmp_path / "sae.json", tmp_path / "atlas.json"
    main.write_text("1")

    def get():
        return files.get(main, lambda: loads.append(len(loads)) or len(loads), also=[beside])

    assert get() == 1 and get() == 1
    beside.write_text("x")  # the file it goes with appears: loaded again
    assert get() == 2
    later = main.stat().st_mtime_ns + 10 ** 9
    os.utime(main, ns=(later, later))
    assert get() == 3 and get() == 3
    files.get(tmp_path / "other", lambda: "other")
    assert get() == 3  # used more recently than the other: kept
    files.get(tmp_path / "third", lambda: "third")
    files.get(tmp_path / "fourth", lambda: "fourth")
    assert get() == 4  # pushed out by two others, loaded again
