"""Visitors' zip files: images out under names the server makes, everything unsafe or damaged refused, and
nothing half-extracted kept."""
from __future__ import annotations

import io
import os
import stat
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from interpret import archives, limits
from interpret.archives import NAMES_FILE, original_names, extract_images, plan_archive
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
    count, skipped = extract_images(archive, tmp_path / "out", tmp_path)
    assert count == 2 and sorted(skipped) == ["__MACOSX/._a.png", "notes.txt"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [NAMES_FILE, "00000-a.png", "00001-b.png"]
    assert original_names(tmp_path / "out") == {"00000-a.png": "a.png", "00001-b.png": "sub/b.PNG"}  # as shown
    assert Image.open(tmp_path / "out" / "00001-b.png").size == (24, 16)


@pytest.mark.parametrize("members, link, message", [
    ({"../evil.png": png()}, None, "outside its folder"),
    ({"/etc/evil.png": png()}, None, "outside its folder"),
    ({"C:/evil.png": png()}, None, "outside its folder"),
    ({"a\\..\\..\\evil.png": png()}, None, "outside its folder"),
    ({"a.png": png()}, "link.png", "holds a link"),
    ({"bomb.png": b"\0" * 5_000_000}, None, "expands .* times .*zip bomb"),
    ({"notes.txt": b"hello"}, None, "holds no images"),
    ({"a.png": png(), "a.png/b.png": png()}, None, "both as a file and as a folder"),
    ({"x/a.png": png(), "x": b"not a folder"}, None, "both as a file and as a folder"),
])
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, members, link, message):
    archive = make_zip(tmp_path / "bad.zip", members, link)
    with pytest.raises(InterpretError, match=message):
        extract_images(archive, tmp_path / "out", tmp_path)
    assert not (tmp_path / "out").exists()


def test_a_name_given_twice_is_refused(tmp_path):
    archive = tmp_path / "twice.zip"
    with zipfile.ZipFile(archive, "w") as writer, pytest.warns(UserWarning, match="Duplicate name"):
        writer.writestr("a.png", png())
        writer.writestr("a.png", png((0, 0, 200)))
    with pytest.raises(InterpretError, match="holds 'a.png' twice"):
        extract_images(archive, tmp_path / "out", tmp_path)


def damaged(path, how: str):
    """A zip of three images, damaged after it was written: 'crc' flips a byte of the last image's data;
    'header' renames the last image in its local header only (the directory keeps the first name)."""
    make_zip(path, {"a.png": png(), "b.png": png((0, 200, 0)), "c.png": png((0, 0, 200))},
             compression=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        last = archive.getinfo("c.png")
    name_at = last.header_offset + 30
    if how == "crc":
        data[name_at + len("c.png") + 20] ^= 0xFF
    else:
        data[name_at:name_at + 5] = b"z.png"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how, message", [("crc", "damaged .*CRC"), ("header", "damaged .*differ")])
def test_a_damaged_archive_keeps_nothing_and_leaves_the_previous_images(tmp_path, how, message):
    out = tmp_path / "out"
    extract_images(make_zip(tmp_path / "good.zip", {"old.png": png()}), out, tmp_path)
    with pytest.raises(InterpretError, match=message):
        extract_images(damaged(tmp_path / "bad.zip", how), out, tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.zip", "good.zip", "out"]  # no partial folder
    assert sorted(path.name for path in out.iterdir()) == [NAMES_FILE, "00000-old.png"]  # the last good one, untouched


def test_a_name_cut_to_nothing_by_a_nul_byte_is_refused(tmp_path):
    archive = make_zip(tmp_path / "nul.zip", {"a.png": png(), "b.png": png()})
    data = archive.read_bytes()
    directory = data.rindex(b"b.png")  # the central directory's copy of the name
    archive.write_bytes(data[:directory] + b"\0" + data[directory + 1:])
    with pytest.raises(InterpretError, match="without a name"):
        extract_images(archive, tmp_path / "out", tmp_path)


def test_the_target_must_lie_inside_its_root(tmp_path):
    from interpret.paths import UnsafePath

    archive = make_zip(tmp_path / "good.zip", {"a.png": png()})
    (tmp_path / "home").mkdir()
    for target in (tmp_path / "elsewhere", tmp_path / "home", tmp_path / "home" / ".." / "x"):
        with pytest.raises(UnsafePath):
            extract_images(archive, target, tmp_path / "home")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["good.zip", "home"]


member_names = st.one_of(
    st.text(min_size=1, max_size=300),
    st.lists(st.sampled_from(["..", ".", "", "a", "/", "\\", "C:", "~", "\x00", "é", "📷", "a" * 255, "%2e%2e"]),
             min_size=1, max_size=8).map("/".join),
).map(lambda name: name + ".png")


@pytest.mark.filterwarnings("ignore:Duplicate name")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(member_names, min_size=1, max_size=4))
def test_any_member_names_land_inside_the_target_or_are_refused(tmp_path_factory, names):
    """Whatever names a zip holds, each image lands flat in the target under a name made here, or the archive is
    refused with a message; nothing is ever written anywhere else."""
    root = tmp_path_factory.mktemp("root")
    archive = root / "in.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for name in names:
            try:
                writer.writestr(zipfile.ZipInfo(name), png())
            except (ValueError, UnicodeEncodeError, IndexError):
                return  # zipfile itself cannot write such a name
    home = root / "home"
    home.mkdir()
    try:
        count, _ = extract_images(archive, home / "visitor" / "toy", home)
    except InterpretError:
        written = [path for path in root.rglob("*") if path.is_file()]
        assert written == [archive]
        return
    extracted = sorted(path for path in (home / "visitor" / "toy").iterdir() if path.name != NAMES_FILE)
    assert len(extracted) == count and all(path.is_file() and path.name.isprintable() for path in extracted)
    assert set(original_names(home / "visitor" / "toy")) == {path.name for path in extracted}
    assert all(len(os.fsencode(path.name)) <= 255 for path in extracted)  # any file system takes it
    assert sorted(path for path in root.rglob("*") if path.is_file()) == sorted(
        [archive, *extracted, home / "visitor" / "toy" / NAMES_FILE])


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
