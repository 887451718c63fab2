"""Images out of a visitor's zip file, safely: the whole archive is checked before anything is written.

Refused with a message (and nothing written): a file that is not a zip, more than `MAX_BUILD_IMAGES` images,
more than `MAX_ARCHIVE_BYTES` of them uncompressed, an image larger than `MAX_IMAGE_BYTES`, a file that expands
more than `MAX_COMPRESSION_RATIO` times (a zip bomb), names that would land outside the target folder (`../`,
absolute paths, drive letters), and links. Files that are not images (by suffix) are skipped and listed; the
images themselves are checked when the database is built (an unreadable one is skipped and listed there).
"""
from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from .errors import InterpretError
from .images import IMAGE_SUFFIXES
from .limits import MAX_ARCHIVE_BYTES, MAX_BUILD_IMAGES, MAX_COMPRESSION_RATIO, MAX_IMAGE_BYTES, MB


def plan_archive(path: str | Path) -> tuple[list[zipfile.ZipInfo], list[str]]:
    """(the image members to extract, the names of members skipped as not images), or a message naming the
    first member or limit that makes the archive unusable. Reads the archive's directory only."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise InterpretError(f"The upload is not a zip file of images ({error}).") from None
    images, skipped, total = [], [], 0
    with archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            name = member.filename
            if _escapes(name):
                raise InterpretError(f"The zip file names {name!r}, which would land outside its folder; nothing "
                                     "was extracted.")
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


def extract_images(path: str | Path, target: str | Path) -> tuple[int, list[str]]:
    """Extract the archive's images (checked whole by `plan_archive` first) into `target`, which is replaced.
    Returns (images extracted, members skipped as not images). Each file is written with at most its declared
    size: an archive that lies about sizes cannot write more."""
    images, skipped = plan_archive(path)
    target = Path(target)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with zipfile.ZipFile(path) as archive:
        for member in images:
            destination = target / PurePosixPath(member.filename)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, destination.open("wb") as sink:
                remaining = member.file_size
                while remaining > 0:
                    block = source.read(min(remaining, 2 ** 20))
                    if not block:
                        break
                    sink.write(block)
                    remaining -= len(block)
    return len(images), skipped


def _escapes(name: str) -> bool:
    """Whether a member's name would land outside the folder it is extracted into."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
        return True
    parts = PurePosixPath(name).parts
    return any(part == ".." for part in parts) or os.path.isabs(name)
