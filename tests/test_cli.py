import csv
import json
import shlex
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from interpret.cli import main
from tests.conftest import ROOT


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "interpret", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "heads" in result.stdout


def test_heads_prints_top_heads_and_saves_the_grid(photo, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert main(["heads", str(photo), "--caption", "a dog", "--top", "5", "--save", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "cosine score" in out and out.count("\n") > 5
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "5"]
    assert all(0 <= int(row[1]) < 12 and 0 <= int(row[2]) < 12 for row in rows)
    with Image.open(grid) as picture:
        assert picture.size[0] > 200


def test_bad_image_is_a_message_not_a_traceback(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["heads", str(broken), "--caption", "a dog"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: 'broken.png'") and "Traceback" not in err
    assert err.startswith("note: ViT-B-32 / random init: random weights (no --pretrained)")  # said, not silent


def test_unknown_model_and_empty_caption(photo, capsys):
    assert main(["heads", str(photo), "--caption", "a dog", "--model", "ViT-Q-99"]) == 2
    assert "Unknown model 'ViT-Q-99'" in capsys.readouterr().err
    assert main(["heads", str(photo), "--caption", " "]) == 2
    assert "caption is empty" in capsys.readouterr().err


def test_long_caption_is_cut_with_a_warning(photo, capsys):
    assert main(["heads", str(photo), "--caption", "dog " * 100, "--top", "1"]) == 0
    assert "warning: Caption 1 was longer than the model's context" in capsys.readouterr().err


def test_heads_on_the_toy_model(capsys):
    from interpret.toy.examples import toy_examples

    path, caption = toy_examples()[0]
    assert main(["heads", path, "--caption", caption, "--model", "toy", "--top", "3"]) == 0
    assert "toy" in capsys.readouterr().out


def test_describe_heads_on_the_toy_world(tmp_path, capsys):
    out = tmp_path / "labels.json"
    assert main(["describe-heads", "--model", "toy", "--limit", "120", "--k", "4", "--out", str(out)]) == 0
    assert "described 32 heads of toy" in capsys.readouterr().out and out.is_file()


def test_describe_heads_on_a_folder_skips_broken_images(tmp_path, photo, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "photo.png").write_bytes(photo.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    bank = tmp_path / "bank.txt"
    bank.write_text("colour\tsomething red\ncolour\tsomething blue\nanimal\ta dog\nanimal\ta cat\n")
    out = tmp_path / "labels.json"
    assert main(["describe-heads", "--model", "ViT-B-32", "--images", str(folder), "--bank", str(bank),
                 "--layers", "11", "--k", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipped: 'broken.jpg'" in captured.err and "described 12 heads" in captured.out


def test_describe_heads_needs_images_for_real_models(capsys):
    assert main(["describe-heads", "--model", "ViT-B-32"]) == 2
    assert "--images DIR is needed" in capsys.readouterr().err


def test_layers_that_do_not_exist_get_a_message(capsys):
    assert main(["describe-heads", "--model", "toy", "--layers", "9"]) == 2
    assert "toy (bundled) has layers 0..3 (or -4..-1); there is no layer 9." in capsys.readouterr().err


def test_build_index_and_neighbours_on_the_toy_model(tmp_path, capsys):
    out = tmp_path / "toy-db"
    assert main(["build-index", "--model", "toy", "--out", str(out), "--layers", "-1"]) == 0
    assert "600 images" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["layers"] == [3]  # the toy's own scenes take --layers
    query = str(next((out / "images").glob("scene-*.png")))
    assert main(["neighbours", query, "--index", str(out), "--head", "3.1", "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "neighbours by head 3.1" in lines[0] and len(lines) == 4 and lines[1].endswith(query)
    assert main(["neighbours", "--text", "a red circle", "--index", str(out), "--k", "2"]) == 2
    assert "--text needs --head" in capsys.readouterr().err
    assert main(["neighbours", query, "--index", str(tmp_path / "none")]) == 2
    assert "There is no database" in capsys.readouterr().err

    # a damaged database is refused with a command, and that command rebuilds it
    data = out / json.loads((out / "manifest.json").read_text())["data"]
    damaged = bytearray((data / "head_L3_H1.faiss").read_bytes())
    damaged[len(damaged) // 2] ^= 1
    (data / "head_L3_H1.faiss").write_bytes(bytes(damaged))
    assert main(["neighbours", query, "--index", str(out), "--head", "3.1"]) == 2
    message = capsys.readouterr().err
    assert "damaged (head_L3_H1.faiss does not match the SHA-256" in message
    command = shlex.split(message.split("Rebuild it:")[1])
    assert command[:3] == ["python", "-m", "interpret"]
    assert command[command.index("--layers") + 1:][:1] == ["3"]
    assert main(command[3:]) == 0 and "600 added, 0 kept" in capsys.readouterr().out
    assert main(["neighbours", query, "--index", str(out), "--head", "3.1", "--k", "3"]) == 0


def test_build_index_takes_an_index_kind_and_an_engine(tmp_path, capsys):
    out = tmp_path / "db"
    images = ROOT / "assets" / "examples"
    assert main(["build-index", "--model", "toy", "--images", str(images), "--out", str(out), "--layers", "-1",
                 "--index", "hnsw", "--engine", "local"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["index"] == "hnsw" and "head_L3_H1.f16.npy" in manifest["files"]
    data = out / manifest["data"]
    (data / "head_L3_H1.f16.npy").write_bytes(b"")
    query = str(next(images.glob("toy-*.png")))
    assert main(["neighbours", query, "--index", str(out), "--head", "3.1", "--k", "2"]) == 2
    assert "--index hnsw --overwrite" in capsys.readouterr().err  # the rebuild keeps the kind
    assert main(["build-index", "--model", "toy", "--images", str(images), "--out", str(out), "--workers", "2"]) == 2
    assert "are for --engine ray" in capsys.readouterr().err


def test_eval_seg_over_a_folder_of_images_and_masks(tmp_path, capsys):
    from interpret.toy.train import toy_scene

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        scene = toy_scene(81_000 + i, count=1)
        scene.image.save(tmp_path / "images" / f"s{i}.png")
        Image.fromarray(scene.masks[0].astype("uint8") * 255).save(tmp_path / "masks" / f"s{i}.png")
    (tmp_path / "classes.txt").write_text("a red circle\na blue square\na green cross\n")
    args = ["eval-seg", "--model", "toy", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
            "--classes", str(tmp_path / "classes.txt")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 images of" in out and "pixel accuracy" in out and "mIoU" in out and "mAP" in out
    assert main(args[:5]) == 2
    assert "--images needs --masks" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "missing.txt")]) == 2
    assert "No class file at" in capsys.readouterr().err


def test_topic_prints_where_the_map_peaks_and_saves_it(tmp_path, capsys):
    from interpret.toy.train import toy_scene

    scene = toy_scene(81_010, count=1)  # one object: the relative map of its colour peaks on it
    scene.image.save(tmp_path / "scene.png")
    colour = f"something {scene.objects[0].colour}"
    others = [f"something {c}" for c in ("red", "green", "blue", "yellow") if c != scene.objects[0].colour]
    assert main(["topic", str(tmp_path / "scene.png"), "--model", "toy", "--text", colour, "--relative-to",
                 *others, "--save", str(tmp_path / "map.png")]) == 0
    out = capsys.readouterr().out
    assert f"all parts: '{colour} − mean(" in out and "on the 8x8 grid" in out
    row, column = (int(n) for n in re.search(r"largest at row (\d+), column (\d+)", out).groups())
    left, top, right, bottom = scene.boxes[0]
    assert left - 8 <= column * 8 + 4 <= right + 8 and top - 8 <= row * 8 + 4 <= bottom + 8
    assert Image.open(tmp_path / "map.png").size[0] > 100
    assert main(["topic", str(tmp_path / "scene.png"), "--model", "toy", "--text", "a", "--heads", "7.1"]) == 2
    assert "there is no layer 7" in capsys.readouterr().err


def test_interact_prints_token_scores_and_saves_both_pictures(tmp_path, capsys):
    from interpret.toy.examples import toy_examples

    path, _ = toy_examples()[1]
    arguments = ["interact", path, "--caption", "a blue circle and a yellow square", "--model", "toy",
                 "--image-layer", "2", "--text-layer", "0", "--tokens", "2", "--box", "0,0,32,32",
                 "--save", str(tmp_path / "map.png"), "--save-tokens", str(tmp_path / "tokens.png")]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "the box (0, 0, 32, 32)" in out and "'blue' matches the image most" in out and "residual" in out
    assert Image.open(tmp_path / "map.png").size[0] > 100 and Image.open(tmp_path / "tokens.png").size[0] > 100
    assert main(["interact", path, "--caption", "a blue circle", "--model", "toy", "--tokens", "x"]) == 2
    assert "Tokens 'x' not understood" in capsys.readouterr().err


def test_mutual_over_models_writes_a_table_and_a_plot(tmp_path, capsys):
    import csv
    import json

    for colour, value in (("red", (210, 40, 40)), ("blue", (40, 60, 210))):
        (tmp_path / "images" / colour).mkdir(parents=True)
        for i in range(2):
            picture = Image.new("RGB", (64, 64), (230, 230, 230))
            picture.paste(value, (16 + 8 * i, 16, 40 + 8 * i, 40))
            picture.save(tmp_path / "images" / colour / f"{i}.png")
    (tmp_path / "d.json").write_text(json.dumps({"red": ["something red"], "blue": ["something blue"]}))
    out, plot = tmp_path / "table.csv", tmp_path / "plot.png"
    assert main(["mutual", "--models", "toy", "ViT-B-32", "--images", str(tmp_path / "images"), "--descriptors",
                 str(tmp_path / "d.json"), "--template", "a {} square", "--parts", "2", "--out", str(out),
                 "--plot", str(plot)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [row["model"] for row in rows] == ["toy (bundled)", "ViT-B-32 / random init"]
    assert float(rows[0]["top-1"]) == 1.0 and rows[0]["images"] == "4" and rows[0]["classes"] == "2"
    assert {"MI (bits)", "MI AUC", "deletion AUC", "descriptor-boosted top-1"} <= set(rows[0])
    assert "random weights: its figures are meaningless" in capsys.readouterr().out
    assert Image.open(plot).size[0] > 100
    assert main(["mutual", "--models", "ViT-B-32", "--images", str(tmp_path)]) == 2
    assert "--descriptors FILE is needed" in capsys.readouterr().err


def test_help_imports_neither_torch_nor_open_clip():
    probe = ("import sys; from interpret.cli import build_parser; import interpret; build_parser(); "
             "print(sorted(name for name in ('torch', 'open_clip', 'gradio') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_score_models_runs_on_the_toy_and_a_random_init_model(tmp_path, capsys, monkeypatch):
    from interpret import banks
    from tests.conftest import SHARED_DATA

    full = banks.general_bank()  # the random-init model's heads are described with 12 texts a property, not 3,500
    picked = [i for tag in sorted(set(full.tags)) for i in [j for j, t in enumerate(full.tags) if t == tag][:12]]
    monkeypatch.setattr(banks, "general_bank", lambda: banks.TextBank(
        "general", tuple(full.texts[i] for i in picked), tuple(full.tags[i] for i in picked)))

    assert main(["score-models", "--models", "toy", "--limit", "60", "--remove", "4", "--seeds", "1",
                 "--out", str(tmp_path / "toy.csv"), "--plot", str(tmp_path / "toy.png")]) == 0
    out = capsys.readouterr().out
    assert "consistency 5..0:" in out and "without the 4 most / 4 random / 4 least" in out
    row = next(csv.DictReader((tmp_path / "toy.csv").open()))
    assert row["heads scored"] == "32" and float(row["association"]) > 0 and "zero: without 4 high" in row
    assert Image.open(tmp_path / "toy.png").size[0] > 200
    samples = SHARED_DATA / "images" / "imagenet-sample"
    if not samples.is_dir():
        return
    for name, pattern in (("goldfish", "*goldfish*"), ("tench", "*tench*")):
        (tmp_path / "classes" / name).mkdir(parents=True)
        for path in sorted(samples.glob(pattern))[:1]:
            for copy in range(3):
                Image.open(path).rotate(copy * 10).save(tmp_path / "classes" / name / f"{copy}.png")
    from interpret import models

    monkeypatch.setattr(models, "INDEXES", tmp_path / "indexes")  # its labels, written where no later test looks
    assert main(["score-models", "--models", "ViT-B-32", "--images", str(tmp_path / "classes"), "--remove", "4",
                 "--seeds", "1", "--out", str(tmp_path / "b32.csv")]) == 0
    out = capsys.readouterr().out
    assert "random weights: these scores describe no trained model" in out and "6 images of 2 classes" in out
    assert main(["score-models", "--models", "ViT-B-32", "--template", "{0:>9}"]) == 2
    assert "exactly one {}" in capsys.readouterr().err


def test_score_models_drops_an_unreadable_image_together_with_its_label(tmp_path, capsys):
    """Each image keeps its own class when another is skipped (the lists stay aligned)."""
    from interpret import cli

    for name, colour in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (32, 32), colour).save(tmp_path / name / f"{i}.png")
    (tmp_path / "a" / "2.png").write_text("not an image")  # sorts within class a
    args = cli.build_parser().parse_args(["score-models", "--models", "toy", "--images", str(tmp_path)])
    from interpret.models import load_model

    images, labels, _, what = cli._evaluation_set(load_model("toy"), args)
    assert [Path(image).parent.name for image in images] == ["a", "a", "b", "b"] and labels == [0, 0, 1, 1]
    assert "4 images of 2 classes" in what and "skipped" in capsys.readouterr().err
