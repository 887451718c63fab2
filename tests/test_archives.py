"""Visitors' zip files: images out, everything unsafe refused before anything is written."""
from __future__ import annotations

import io
import stat
import zipfile

import pytest
from PIL import Image

from interpret import archives, limits
from interpret.archives import extract_images, plan_archive
from interpret.errors import InterpretError


def png(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(path, members: dict[str, bytes], link: str | None = None, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def test_images_are_extracted_and_other_files_skipped(tmp_path):
    archive = make_zip(tmp_path / "photos.zip", {"a.png": png(), "sub/b.PNG": png((0, 0, 200)), "notes.txt": b"hi",
                                                 "__MACOSX/._a.png": b"junk", "sub/": b""})
    count, skipped = extract_images(archive, tmp_path / "out")
    assert count == 2 and sorted(skipped) == ["__MACOSX/._a.png", "notes.txt"]
    assert Image.open(tmp_path / "out" / "sub" / "b.PNG").size == (24, 16)


@pytest.mark.parametrize("members, link, message", [
    ({"../evil.png": png()}, None, "outside its folder"),
    ({"/etc/evil.png": png()}, None, "outside its folder"),
    ({"C:/evil.png": png()}, None, "outside its folder"),
    ({"a\\..\\..\\evil.png": png()}, None, "outside its folder"),
    ({"a.png": png()}, "link.png", "holds a link"),
    ({"bomb.png": b"\0" * 5_000_000}, None, "expands .* times .*zip bomb"),
    ({"notes.txt": b"hello"}, None, "holds no images"),
])
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, members, link, message):
    archive = make_zip(tmp_path / "bad.zip", members, link)
    with pytest.raises(InterpretError, match=message):
        extract_images(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_counts_and_sizes_are_limited(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "MAX_BUILD_IMAGES", 3)
    archive = make_zip(tmp_path / "many.zip", {f"{i}.png": png() for i in range(4)})
    with pytest.raises(InterpretError, match="more than 3 images"):
        plan_archive(archive)
    monkeypatch.setattr(archives, "MAX_BUILD_IMAGES", 100)
    monkeypatch.setattr(archives, "MAX_ARCHIVE_BYTES", 2 * len(png()))
    with pytest.raises(InterpretError, match="MB uncompressed"):
        plan_archive(archive)
    stored = make_zip(tmp_path / "big.zip", {"big.png": b"x" * 2000}, compression=zipfile.ZIP_STORED)
    monkeypatch.setattr(archives, "MAX_IMAGE_BYTES", 1000)
    with pytest.raises(InterpretError, match="an image may be"):
        plan_archive(stored)
    (tmp_path / "not.zip").write_bytes(b"plain text")
    with pytest.raises(InterpretError, match="not a zip file"):
        plan_archive(tmp_path / "not.zip")
    assert limits.MAX_COMPRESSION_RATIO >= 10
