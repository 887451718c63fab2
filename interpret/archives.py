"""Images out of a visitor's zip file, safely: the whole archive is checked before anything is written, and
nothing half-extracted is ever kept.

Refused with a message (and nothing written): a file that is not a zip, more than `MAX_BUILD_IMAGES` images,
more than `MAX_ARCHIVE_BYTES` of them uncompressed, an image larger than `MAX_IMAGE_BYTES`, a file that expands
more than `MAX_COMPRESSION_RATIO` times (a zip bomb), names that would land outside the target folder (`../`,
absolute paths, drive letters), two members of one name or a name that is both a file and a folder, and links.
Refused while extracting (and everything extracted so far deleted): a member whose data fails its CRC, whose
local header names another file than the directory, or that holds more than it declares. Files that are not
images (by suffix) are skipped and listed; the images themselves are checked when the database is built (an
unreadable one is skipped and listed there).

The member names never become paths: each image is written under a name made here (its number, the letters and
digits of its file name, its suffix), flat in the target folder. What each was called in the archive is kept
beside them (`NAMES_FILE`, read by `original_names`), so that galleries show the visitor's own names.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import unicodedata
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from .errors import InterpretError
from .images import IMAGE_SUFFIXES, reduced_copy, spread_over
from .jobs import checkpoint
from .limits import (MAX_ARCHIVE_BYTES, MAX_BUILD_IMAGES, MAX_COMPRESSION_RATIO, MAX_IMAGE_BYTES, MAX_MEMBER_DEPTH,
                     MAX_MEMBER_NAME_CHARS, MB)
from .paths import inside

STEM_CHARS = 40  # of an original file name kept in the name an extracted image gets
NAMES_FILE = ".names.json"  # extracted name -> the member's name in the archive (not an image: never indexed)


def plan_archive(path: str | Path) -> tuple[list[zipfile.ZipInfo], list[str]]:
    """(the image members to extract, the names of members skipped as not images), or a message naming the
    first member or limit that makes the archive unusable. Reads the archive's directory only."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise InterpretError(f"The upload is not a zip file of images ({error}).") from None
    images, skipped, total = [], [], 0
    with archive:
        members = archive.infolist()
        _check_names(members)
        for member in members:
            if member.is_dir():
                continue
            name = member.filename
            if stat.S_ISLNK(member.external_attr >> 16):
                raise InterpretError(f"The zip file holds a link ({name!r}); links are refused, nothing was "
                                     "extracted.")
            if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES or PurePosixPath(name).name.startswith("."):
                skipped.append(name)
                continue
            if member.file_size > MAX_IMAGE_BYTES:
                raise InterpretError(f"{name!r} in the zip file is {member.file_size / MB:.1f} MB; an image may be "
                                     f"{MAX_IMAGE_BYTES // MB} MB at most.")
            if member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1):
                raise InterpretError(f"{name!r} in the zip file expands {member.file_size / max(member.compress_size, 1):,.0f} "
                                     f"times (a zip bomb?); the limit is {MAX_COMPRESSION_RATIO}.")
            images.append(member)
            total += member.file_size
            if len(images) > MAX_BUILD_IMAGES:
                raise InterpretError(f"The zip file holds more than {MAX_BUILD_IMAGES:,} images; the limit is "
                                     f"{MAX_BUILD_IMAGES:,}.")
            if total > MAX_ARCHIVE_BYTES:
                raise InterpretError(f"The images in the zip file come to more than {MAX_ARCHIVE_BYTES // MB} MB "
                                     "uncompressed; that is the limit.")
    if not images:
        raise InterpretError(f"The zip file holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return images, skipped


def extract_images(path: str | Path, target: str | Path, root: str | Path, short_side: int | None = None
                   ) -> tuple[int, list[str]]:
    """Extract the archive's images (checked whole by `plan_archive` first) into `target`, a folder strictly
    inside `root`, which is replaced only once every image is out and checked. Returns (images extracted,
    members skipped as not images). Each file is written with at most its declared size: an archive that lies
    about sizes cannot write more. With `short_side` (a model's `reading_side`), a large picture of a format that
    cannot be decoded reduced is kept at that size (`images.reduced_copy`), under its own name: every later pass
    reads it as fast as a small one."""
    images, skipped = plan_archive(path)
    target = inside(target, root)
    partial = inside(target.parent / f".partial-{uuid.uuid4().hex}", root)
    partial.mkdir(parents=True)
    try:
        names = {}
        with zipfile.ZipFile(path) as archive:
            for number, member in enumerate(images):
                name = extracted_name(number, member.filename)
                names[name] = shown_name(member.filename)
                checkpoint()  # a unit of a build's work
                _extract(archive, member, partial / name)
                if short_side is not None and (smaller := reduced_copy(partial / name, short_side)) is not None:
                    (partial / name).write_bytes(smaller)
        (partial / NAMES_FILE).write_text(json.dumps(names, ensure_ascii=False), encoding="utf-8")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError,
            NotImplementedError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise InterpretError(f"The zip file is damaged ({_reason(error)}); nothing from it was kept.") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return len(images), skipped


def sample_images(path: str | Path, images: list[zipfile.ZipInfo], count: int) -> list[bytes]:
    """The contents of `count` of the archive's image members (checked by `plan_archive`), spread over it: to
    measure what its images cost before any is extracted. Each is read to at most its declared size."""
    chosen = spread_over(images, count)
    try:
        with zipfile.ZipFile(path) as archive:
            return [_read(archive, member) for member in chosen]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError,
            NotImplementedError) as error:
        raise InterpretError(f"The zip file is damaged ({_reason(error)}); nothing from it was kept.") from None


def _read(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    with archive.open(member) as source:
        data = source.read(member.file_size + 1)
    if len(data) != member.file_size:
        raise zipfile.BadZipFile(f"{member.filename!r} does not hold its declared size")
    return data


def shown_name(member_name: str) -> str:
    """A member's name as a gallery shows it: its path in the archive, without control or format characters (a
    name's right-to-left override would turn the rest of a caption around)."""
    return "".join(char for char in member_name if not unicodedata.category(char).startswith("C")) or "image"


def original_names(folder: str | Path) -> dict[str, str]:
    """The names the images `extract_images` wrote to `folder` had in their archive ({} for any other folder)."""
    try:
        names = json.loads((Path(folder) / NAMES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return names if isinstance(names, dict) else {}


def extracted_name(number: int, member_name: str) -> str:
    """The name an extracted image gets: its number, the letters and digits of its file name (cut), its suffix."""
    pure = PurePosixPath(member_name)
    stem = "".join(char if char.isalnum() or char in "-_" else "_" for char in pure.stem)[:STEM_CHARS]
    return f"{number:05d}-{stem or 'image'}{pure.suffix.lower()}"


def _extract(archive: zipfile.ZipFile, member: zipfile.ZipInfo, destination: Path) -> None:
    """One member into `destination`, at most its declared size; its CRC and its local header are checked by
    reading it to its end (`zipfile` raises `BadZipFile` there)."""
    with archive.open(member) as source, destination.open("xb") as sink:
        remaining = member.file_size
        while remaining > 0:
            block = source.read(min(remaining, 2 ** 20))
            if not block:
                raise zipfile.BadZipFile(f"{member.filename!r} ends before its declared size")
            sink.write(block)
            remaining -= len(block)
        if source.read(1):
            raise zipfile.BadZipFile(f"{member.filename!r} holds more than its declared size")


def _reason(error: BaseException) -> str:
    """A short reason for a damaged archive, without any server path."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)[:200] or type(error).__name__


def _check_names(members: list[zipfile.ZipInfo]) -> None:
    """Refuse names that would land outside the folder, repeated names, and a name that is a file and also
    the folder of another member (`a.png` and `a.png/b.png`): a person's archive never holds those."""
    files, folders = set(), set()
    for member in members:
        name = member.filename
        if not name.strip("/"):
            raise InterpretError("The zip file holds a member without a name; nothing was extracted.")
        if len(name) > MAX_MEMBER_NAME_CHARS or name.count("/") > MAX_MEMBER_DEPTH:
            raise InterpretError(f"The zip file names a member {len(name):,} characters long, {name.count('/'):,} "
                                 f"folders deep; a name may be {MAX_MEMBER_NAME_CHARS:,} characters and "
                                 f"{MAX_MEMBER_DEPTH} folders deep. Nothing was extracted.")
        if _escapes(name):
            raise InterpretError(f"The zip file names {name!r}, which would land outside its folder; nothing "
                                 "was extracted.")
        parts = PurePosixPath(name).parts
        folders.update("/".join(parts[:end]) for end in range(1, len(parts)))
        if member.is_dir():
            folders.add("/".join(parts))
            continue
        key = "/".join(parts)
        if key in files:
            raise InterpretError(f"The zip file holds {name!r} twice; nothing was extracted.")
        files.add(key)
    clash = sorted(files & folders)
    if clash:
        raise InterpretError(f"The zip file holds {clash[0]!r} both as a file and as a folder; nothing was "
                             "extracted.")


def _escapes(name: str) -> bool:
    """Whether a member's name would land outside the folder it is extracted into."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
        return True
    parts = PurePosixPath(name).parts
    return any(part == ".." for part in parts) or os.path.isabs(name)
