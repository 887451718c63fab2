"""The mends around Gradio's and open_clip's faults (`interpret.ui.upstream`, `models.bounded_word_cache`)."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from interpret.models import TOKENIZER_WORDS_KEPT, BoundedCache, bounded_word_cache
from interpret.ui import upstream


def readers_see_only_whole_files(save, folder: Path, rounds: int = 60) -> bool:
    """Save one large picture over and over (as many visitors asking the same thing do) while another thread
    reads the file each save names: whether every read was the whole file."""
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8))
    path = Path(save(picture, str(folder), format="png"))
    whole = path.stat().st_size
    partial, done = [], threading.Event()

    def read():
        while not done.is_set():
            size = len(path.read_bytes())
            if size != whole:
                partial.append(size)

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(rounds):
        save(picture, str(folder), format="png")
    done.set()
    reader.join()
    return not partial


def test_outputs_are_written_whole_under_concurrency(tmp_path):
    upstream.whole_outputs()
    from gradio import processing_utils

    assert processing_utils.save_pil_to_cache.writes_whole
    assert readers_see_only_whole_files(processing_utils.save_pil_to_cache, tmp_path)


def test_write_whole_leaves_no_staging_file_and_keeps_an_identical_file(tmp_path):
    target = tmp_path / "a.bin"
    upstream.write_whole(target, b"x" * 1000)
    first = target.stat().st_ino
    upstream.write_whole(target, b"x" * 1000)  # the same bytes (its name is their digest): not written again
    assert target.stat().st_ino == first and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_the_tokenizer_keeps_a_bounded_number_of_words_and_its_special_tokens():
    class Tokenizer:
        cache = {"<start_of_text>": "<start_of_text>", "<end_of_text>": "<end_of_text>"}

    tokenizer = bounded_word_cache(Tokenizer())
    assert isinstance(tokenizer.cache, BoundedCache)
    for number in range(TOKENIZER_WORDS_KEPT + 500):
        tokenizer.cache[f"word{number}"] = f"w {number}"
    assert len(tokenizer.cache) == TOKENIZER_WORDS_KEPT + 2
    assert "<start_of_text>" in tokenizer.cache and "word0" not in tokenizer.cache
    assert f"word{TOKENIZER_WORDS_KEPT + 499}" in tokenizer.cache


def test_only_the_end_of_an_mcp_session_is_kept_out_of_the_log():
    import logging
    import sys

    import anyio

    from interpret.ui.upstream import QuietSessionEnds

    def record(error: BaseException, message: str = "Error in standalone SSE writer") -> logging.LogRecord:
        try:
            raise error
        except BaseException:  # noqa: BLE001
            return logging.LogRecord("mcp.server.streamable_http", logging.ERROR, __file__, 1, message, None,
                                     sys.exc_info())

    quiet = QuietSessionEnds()
    assert not quiet.filter(record(anyio.ClosedResourceError()))
    assert quiet.filter(record(RuntimeError("a real fault")))
    assert quiet.filter(record(anyio.ClosedResourceError(), "Error in message router"))
