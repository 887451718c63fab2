"""The Build a database tab: a visitor's own images (a zip file; on a local app started with --allow-folders, a
folder of the server) become the current model's head labels and image database, built in the background with a
progress bar. The neighbour tabs search it, in this visitor's session, as soon as it is complete."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import gradio as gr

from ..archives import extract_images, plan_archive, sample_images
from ..bundles import ESTIMATE_SAMPLES, build_bundle, estimate_build
from ..folders import BUNDLE_MANIFEST
from ..errors import InterpretError
from ..images import list_images, spread_over
from ..jobs import HEAVY, Job, checkpoint
from ..limits import BUILT_LIFETIME_S, MAX_BUILD_IMAGES, check_text
from ..banks import default_bank
from ..models import layer_index
from ..neurons import default_neuron_layers
from ..paths import home, inside, visitor_name
from .common import JOB_EVENT, LOOKUP, Shared, error_text, escaped, follow_job, message_for, model_for, page_index
from .tools import described

TITLE = "Build a database"
# Builds and trainings are jobs of `jobs.HEAVY` (one runs at a time on this machine); their requests follow them, so
# that each visitor sees their place in line and a visitor who leaves stops theirs: as many as the line holds.
BUILD = {"concurrency_id": "build", "concurrency_limit": HEAVY.max_waiting + HEAVY.slots}
JOB_BATCH = 8  # images a batch in a build of the app: a batch is the unit after which a build may stop (< 2 s)
FOLDERS = {"allowed": False}  # set by `build_app(allow_folders=...)`: a local user may name a server folder


VISITOR_KINDS = ("built", "uploads")  # the folders of INTERPRET_HOME that hold visitors' files


def visitor_folder(kind: str, session: str | None, slug: str) -> Path:
    """A visitor's folder of `kind` ('built': their databases; 'uploads': their extracted images) for a model,
    one per session and model, under a name the server makes from the session id (`paths.visitor_name`); checked
    to lie inside its kind's folder of INTERPRET_HOME."""
    root = home() / kind
    return inside(root / visitor_name(session) / slug, root)


def built_folder(session: str | None, slug: str) -> Path:
    """Where a visitor's database for a model goes."""
    return visitor_folder("built", session, slug)


def visitor_database(session: str | None, slug: str) -> Path | None:
    """The visitor's complete database for the model, or None (a build in progress is not complete)."""
    folder = built_folder(session, slug)
    return folder if (folder / BUNDLE_MANIFEST).is_file() else None


def visitor_part(session: str | None, slug: str, part: Callable[[Path], Path]) -> Path | None:
    """The visitor's complete database for the model when it holds `part(folder)` (a file inside it: a layer's
    neuron directions, an SAE), else None: the tab then reads the model's own."""
    own = visitor_database(session, slug)
    return own if own is not None and part(own).is_file() else None


def whose(model, own: Path | None) -> str:
    """Whose a stored part is, in words: the visitor's database (`own`, from `visitor_part`), else the model's."""
    return "your database's, this session" if own is not None else f"{model.label}'s own"


def session_of(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def run_build(label: str, archive: str | None, folder: str = "", neurons: bool = False, features: bool = False,
              feature_block: float = 1, transcoders: bool = False, request: gr.Request = None):
    """Check the images, then build the labels and the database (with `neurons`, the directions of the neurons of
    `neurons.default_neuron_layers`; with `features`, an SAE on the stream after `feature_block`; with
    `transcoders`, a transcoder of every block's MLP, all from one pass over the images) as a job of the
    machine's line of long work: the place in line, the estimate and the progress as it goes, and when the tabs
    can use them. The build stops (and what it wrote is removed) when the visitor leaves; the same build asked
    for again while it runs is followed, not started twice."""
    try:
        job = _submit_build(label, archive, folder, session_of(request), neurons, features, feature_block,
                            transcoders)
    except Exception as error:  # a user's mistake, or a failure: its message in the status, the app serves on
        yield error_text(message_for(error, "run_build"))
        return
    yield from follow_job(job)


def check_build(label: str, archive: str | None, folder: str = "") -> tuple:
    """(the model, the image source: a zip file or a folder, the image count, the skipped names, a few of the
    images to measure what they cost: bytes or paths), checked."""
    model = model_for(label)
    folder = check_text(folder, "The folder", 1_000).strip()
    if folder and not FOLDERS["allowed"]:
        raise InterpretError("Naming a folder of this machine is off here (start the app with --allow-folders on "
                             "your own machine); upload a zip file of images instead.")
    if archive:
        images, skipped = plan_archive(archive)
        return model, Path(archive), len(images), skipped, sample_images(archive, images, ESTIMATE_SAMPLES)
    if folder:
        paths = list_images(folder)
        if len(paths) > MAX_BUILD_IMAGES:
            raise InterpretError(f"{folder} holds {len(paths):,} images; the limit is {MAX_BUILD_IMAGES:,}.")
        return model, Path(folder), len(paths), [], spread_over(paths, ESTIMATE_SAMPLES)
    raise InterpretError("Upload a zip file of images first.")


def _submit_build(label: str, archive: str | None, folder: str, session: str | None, neurons: bool = False,
                  features: bool = False, feature_block: float = 1, transcoders: bool = False) -> Job:
    """The build's job in the line of long work (checked before anything is queued): measuring what the images
    cost, then building, into the visitor's folder; removed again when the job stops half-way."""
    model, source, count, skipped, samples = check_build(label, archive, folder)
    neuron_layers = default_neuron_layers(model) if neurons else []
    feature_layers = [layer_index(page_index(feature_block, "The SAE's block"), model.geometry.layers,
                                  model.label)] if features else []
    transcoder_layers = list(range(model.geometry.layers)) if transcoders else []
    bank = default_bank(model.name)
    note = (f" ({len(skipped)} file{' that is not an image' if len(skipped) == 1 else 's that are not images'} "
            f"skipped: {escaped(', '.join(skipped[:5]))})") if skipped else ""
    heading = f"{count:,} image{'s' if count != 1 else ''}{note} for {model.label}"
    target, uploads = built_folder(session, model.slug), visitor_folder("uploads", session, model.slug)

    def work(job: Job) -> str:
        checkpoint("measuring what the images cost")
        seconds, per_image = estimate_build(model, count, bank, samples, neuron_layers, feature_layers,
                                            transcoder_layers)
        job.estimate_s = seconds
        started = time.monotonic()
        _forget_old_builds()
        images = source
        if source.suffix.lower() == ".zip":
            images = uploads
            extract_images(source, images, home() / "uploads", model.reading_side)
        shutil.rmtree(target, ignore_errors=True)  # a build from other images resumes nothing of the last one
        build_bundle(model, images, target.parent, bank=bank, progress=False, batch_size=JOB_BATCH,
                     neuron_layers=neuron_layers, feature_layers=feature_layers,
                     transcoder_layers=transcoder_layers)
        also = ([f"the Neurons tab reads the neurons of layers {', '.join(map(str, neuron_layers))}"]
                if neuron_layers else []) + ([f"the Features tab, block {feature_layers[0]}'s SAE"]
                                             if feature_layers else []) + (
            [f"the Features tab, the transcoders of all {len(transcoder_layers)} MLPs"] if transcoder_layers else [])
        return (f"Done in {_duration(time.monotonic() - started)} (estimated {_duration(seconds)}, "
                f"{per_image:.2f} s an image): **{heading}**. The neighbour tabs (**A database**) now search them"
                f"{''.join('; ' + line for line in also)}, in this session.")

    def cleanup() -> None:  # a build stopped half-way leaves nothing behind
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(uploads, ignore_errors=True)

    key = ("build", session, model.slug, str(source), _stamp(source), tuple(neuron_layers), tuple(feature_layers),
           tuple(transcoder_layers))
    return HEAVY.submit(key, f"Building the database of {heading}", work, cleanup, owner=session)


def _stamp(source: Path) -> tuple:
    """What tells two uploads apart without reading them: size and modification time (a folder: its own)."""
    stat = source.stat()
    return stat.st_size, stat.st_mtime_ns


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _forget_old_builds() -> None:
    """Delete visitors' databases and uploads older than `BUILT_LIFETIME_S` (disk stays bounded)."""
    for kind in VISITOR_KINDS:
        for session in (home() / kind).glob("*"):
            if time.time() - session.stat().st_mtime > BUILT_LIFETIME_S:
                shutil.rmtree(inside(session, home() / kind), ignore_errors=True)


def build(shared: Shared) -> None:
    gr.Markdown("Search **your own images**: upload a zip file of them, and the current model's head labels and "
                "image database are built from it (the time it will take is shown first). The neighbour tabs then "
                "search them, in this session.")
    archive = gr.File(label="Images (a .zip file)", file_types=[".zip"], type="filepath", elem_id="build-archive")
    folder = gr.Textbox(label="Or a folder of this machine (the app was started with --allow-folders)",
                        visible=FOLDERS["allowed"], elem_id="build-folder")
    with gr.Row():
        neurons = gr.Checkbox(label="Also the neurons' directions of the 3 MLP layers before the last (Neurons tab)",
                              elem_id="build-neurons")
        features = gr.Checkbox(label="Also an SAE on one block's output (Features tab)", elem_id="build-features")
        feature_block = gr.Number(value=1, precision=0, label="The SAE's block (negative: from the end)",
                                  elem_id="build-feature-block")
        transcoders = gr.Checkbox(label="Also a transcoder of every MLP, from one pass (Features tab)",
                                  elem_id="build-transcoders")
    button = gr.Button("Build the database", variant="primary", elem_id="build-run")
    status = gr.Markdown(elem_id="build-status")  # progress, the estimate and the outcome (errors marked ⚠️)
    built = button.click(described(run_build, "build_database"), [shared.model, archive, folder, neurons, features,
                                                                     feature_block, transcoders], status,
                         api_name="build_database", **BUILD, **JOB_EVENT)
    for handler, inputs, outputs in shared.after_build:  # choice lists that follow the database in use
        built = built.then(handler, inputs, outputs, api_visibility="private", **LOOKUP)
