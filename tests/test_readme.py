"""The README's examples run as written on the offline default (the toy model): every ```python block, in order,
in one namespace, and every `python -m interpret` line of the ```bash blocks, from a scratch folder that holds the
repository's `assets/` and the tests' `indexes/`. A block whose first line starts with `# needs` (the hub, a
running app) is not run. The package is importable from any folder (requirements.txt installs it)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from interpret.cli import main
from interpret.paths import INDEXES
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(python|bash)\n(.*?)```", README, flags=re.S)


def runnable(language: str) -> list[str]:
    return [code for kind, code in BLOCKS if kind == language and not code.startswith("# needs")]


@pytest.fixture()
def scratch(tmp_path, monkeypatch):
    """A folder like the repository's root: assets/ (the repository's) and indexes/ (the tests')."""
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    INDEXES.mkdir(parents=True, exist_ok=True)
    (tmp_path / "indexes").symlink_to(INDEXES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_examples_to_run():
    assert len(runnable("python")) >= 6 and sum(code.count("python -m interpret") for code in runnable("bash")) >= 10


def test_python_examples_run_as_written(scratch, capsys):
    """...and leave the model's own stored dictionaries as they were: the SAE example writes where it says, and
    what it trains at the README's token count explains most of the variance of other scenes."""
    import json

    from tests.local_server import tree_digest

    stored = INDEXES / "toy" / "features"
    before = tree_digest(stored) if stored.is_dir() else {}
    namespace: dict = {}
    for number, code in enumerate(runnable("python"), start=1):
        try:
            exec(compile(code, f"README python block {number}", "exec"), namespace)
        except Exception as error:  # noqa: BLE001  (say which block failed)
            pytest.fail(f"README python block {number} failed: {type(error).__name__}: {error}\n{code}")
    assert "True" in capsys.readouterr().out  # the decomposition adds up
    assert (tree_digest(stored) if stored.is_dir() else {}) == before
    trained = json.loads((scratch / "out" / "toy-model" / "features" / "layer-01" / "sae.json").read_text())
    assert trained["report"]["explained_variance"] > 0.5


def test_command_line_examples_run_as_written(scratch, capsys):
    lines = [line.split("  #")[0].strip() for code in runnable("bash") for line in code.splitlines()
             if line.startswith("python -m interpret")]
    for line in lines:
        arguments = shlex.split(line)[3:]
        if arguments == ["--help"]:
            with pytest.raises(SystemExit) as done:
                main(arguments)
            assert done.value.code == 0 and "COMMAND" in capsys.readouterr().out
            continue
        assert main(arguments) == 0, f"{line}\n{capsys.readouterr().err}"
        out = capsys.readouterr().out
        if "--model" in arguments:  # the model is named in the output's first line
            assert "toy (bundled)" in out.splitlines()[0], (line, out[:300])
    for saved in ("grid.png", "topic.png", "interaction.png", "tokens.png", "mutual.csv", "mutual.png"):
        assert (scratch / "out" / saved).is_file(), saved
    assert sorted(path.name for path in scratch.iterdir()) == ["assets", "indexes", "out"]  # nothing else written


def test_the_package_imports_from_any_folder(tmp_path):
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", "import interpret, sys; print(interpret.__file__)"], cwd=tmp_path,
                            capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 0, "import interpret fails outside the repository: pip install -r requirements.txt"
    assert result.stdout.strip().startswith(str(ROOT / "interpret"))


def test_the_model_list_names_every_model_the_picker_can_offer():
    from interpret.models import NEWER_CATALOGUE, PRETRAINED_CATALOGUE, RANDOM_CATALOGUE

    models = README.split("## Models", 1)[1].split("\n## ", 1)[0]
    for spec in (*PRETRAINED_CATALOGUE, *NEWER_CATALOGUE):
        assert f"{spec.name} `{spec.pretrained}`" in " ".join(models.split()), spec
    for spec in RANDOM_CATALOGUE:
        assert spec.name in models, spec


def test_every_picture_an_endpoint_returns_is_the_png_the_endpoint_table_promises():
    import gradio as gr

    from interpret.ui import build_app

    page = build_app("toy (bundled)")
    pictures = [block for block in page.blocks.values() if isinstance(block, gr.Image) and block.interactive is False]
    assert pictures and all(picture.format == "png" for picture in pictures), [
        picture.elem_id for picture in pictures if picture.format != "png"]
    table = README.split("| `/heads`", 1)[1].split("\n\n", 1)[0]
    assert "WebP" not in table and "webp" not in table
