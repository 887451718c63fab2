"""Turning whatever a user hands us into a plain RGB PIL image, or a clear `ImageError`.

Accepted: a path, raw bytes, a PIL image or a numpy array (H x W or H x W x C). Handled on the way: transparency
(composited over white), CMYK, palette, greyscale, 16-bit and float images, and the EXIF orientation a camera
records (the picture is turned upright, as a browser shows it). Refused with a message: files that are not
images of the formats named in `OPENED_FORMATS` (no other decoder of Pillow's is ever reached: EPS would call
Ghostscript), truncated or corrupt files, and images outside the limits (`limits`: file bytes, pixels, sides,
aspect ratio), checked on the file's size and then on the header, before any pixel is decoded. A picture shrunk
to `max_side` is reduced strip by strip before it is converted to RGB, so that its memory stays near its size
as decoded, whatever its mode.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from .errors import ImageError
from .limits import MAX_ASPECT, MAX_IMAGE_BYTES, MAX_PIXELS, MAX_SIDE, MB, MIN_SIDE

ImageSource = Union[str, Path, bytes, Image.Image, np.ndarray]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
OPENED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # Pillow's decoders we let a file reach (JPEG's
# opens a phone's multi-picture JPEG, MPO, too)
Image.init()  # registers every plugin, so that the formats above are known by name
DECODED_REDUCED = ("JPEG", "MPO")  # formats Pillow decodes at 1/2, 1/4 or 1/8 scale (`Image.draft`)
CHECK_SIDE = 64  # the longest side a picture is decoded at to check that it can be read
STRIP_PIXELS = 2 ** 22  # pixels converted to RGB at a time while a large picture is reduced
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the turn that makes the picture upright


def load_image(source: ImageSource, name: str | None = None, max_side: int | None = None,
               short_side: int | None = None) -> Image.Image:
    """Return `source` as an RGB PIL image, or raise `ImageError` saying what is wrong with it. With `max_side`,
    a larger image is shrunk to that longest side; with `short_side`, to that shortest side (what a model that
    resizes its input needs: `for_model`); a JPEG is decoded at a reduced scale to begin with, so that a large
    photo costs about what a small one does."""
    label = name or _describe(source)
    if isinstance(source, np.ndarray):
        image = _from_array(source, label)
    elif isinstance(source, Image.Image):
        image = source
    else:
        image, max_side = _open(source, label, max_side, short_side)
    _check_size(image.size, label)
    try:
        turn = _UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation))
        image = _rgb(image, max_side)
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"{label} could not be decoded: the file is truncated or corrupt ({error}).") from None
    return image if turn is None else _upright(image, turn)


def _upright(image: Image.Image, turn: Image.Transpose) -> Image.Image:
    """`image` turned upright, without the orientation it was read with (a picture read again, as the app reads
    its uploads more than once, is not turned twice)."""
    upright = image.transpose(turn)
    for key in ("exif", "xmp", "XML:com.adobe.xmp", "Raw profile type exif"):
        upright.info.pop(key, None)
    return upright


def _rgb(image: Image.Image, max_side: int | None) -> Image.Image:
    """`image` as RGB, shrunk to `max_side` when that is given and smaller. When the shrink is at least 2x, the
    picture is converted a strip at a time, each strip reduced by that whole factor right after (a box filter
    over whole blocks: no seams), then resized to the side: a 40-megapixel palette PNG (40 MB decoded) never
    becomes 160 MB of RGBA."""
    factor = max(image.size) // max_side if max_side else 1
    if factor < 2:
        rgb = _to_rgb(image)
        return rgb if max_side is None else _shrunk(rgb, max_side)
    top = _top(image)
    width, height = image.size
    rows = max(1, STRIP_PIXELS // (width * factor)) * factor
    reduced = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for y in range(0, height, rows):
        strip = _to_rgb(image.crop((0, y, width, min(height, y + rows))), top)
        reduced.paste(strip.reduce(factor), (0, y // factor))
    return _shrunk(reduced, max_side, image.size)


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return f"'{Path(source).name}'"
    return "The image"


def for_model(input_side: int) -> int:
    """The shortest side a picture is read at for a model whose input is `input_side` pixels a side: twice that
    (the model's own resize still has pixels to average), whatever the photo's size."""
    return 2 * input_side


def _open(source: str | Path | bytes, label: str, max_side: int | None = None, short_side: int | None = None
          ) -> tuple[Image.Image, int | None]:
    """(the image, its header read and checked; the longest side it is to be shrunk to)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{label} does not exist or is not a file.")
        _check_bytes(path.stat().st_size, label)
        with path.open("rb") as stream:  # streamed: the file is never read whole into memory
            return _decode(stream, label, max_side, short_side)
    if isinstance(source, (bytes, bytearray)):
        _check_bytes(len(source), label)
        return _decode(io.BytesIO(source), label, max_side, short_side)
    raise ImageError(f"Expected an image file, bytes, a PIL image or an array, got {type(source).__name__}.")


def _check_bytes(size: int, label: str) -> None:
    if size > MAX_IMAGE_BYTES:
        raise ImageError(f"{label} is a {size / MB:.1f} MB file; the limit is {MAX_IMAGE_BYTES // MB} MB.")


def _decode(stream, label: str, max_side: int | None = None, short_side: int | None = None
            ) -> tuple[Image.Image, int | None]:
    """The image in `stream`, decoded after its header passed the size checks, and the longest side it is to be
    shrunk to (`max_side`, or the one that makes its shortest side `short_side`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=OPENED_FORMATS)  # reads the header only
            _check_size(image.size, label)
            if short_side is not None and min(image.size) > short_side:
                fitted = -(-max(image.size) * short_side // min(image.size))
                max_side = fitted if max_side is None else min(max_side, fitted)
            if max_side is not None and image.format in DECODED_REDUCED:
                image.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale when that suffices
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{label} is too large to decode safely (a possible decompression bomb).") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not an image that can be read (expected JPEG, PNG, WebP, BMP, GIF or TIFF).") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"{label} could not be decoded: the file is truncated or corrupt ({error}).") from None
    return image, max_side


def _check_size(size: tuple[int, int], label: str) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{label} is too large ({width} x {height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels)."
        )
    if max(width, height) > MAX_SIDE:
        raise ImageError(f"{label} is too large ({width} x {height} pixels; the limit is {MAX_SIDE:,} pixels a side).")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{label} is too small ({width} x {height} pixels; at least {MIN_SIDE} x {MIN_SIDE} needed).")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"{label} is too elongated ({width} x {height} pixels; the longest side may be at most "
                         f"{MAX_ASPECT} times the shortest).")


def _shrunk(image: Image.Image, side: int, original: tuple[int, int] | None = None) -> Image.Image:
    """`image` itself when its longest side is at most `side`, else a copy shrunk to it, with the aspect of the
    `original` size it was reduced from (default: its own)."""
    width, height = original or image.size
    if max(width, height) <= side:
        return image
    scale = side / max(width, height)
    return image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BICUBIC)


def _from_array(array: np.ndarray, label: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"{label} has shape {array.shape}; expected H x W, H x W x 3 or H x W x 4.")
    _check_size((array.shape[1], array.shape[0]), label)
    return Image.fromarray(_to_uint8(array))


DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16-bit, 32-bit and float pictures


def _to_uint8(array: np.ndarray, top: float | None = None) -> np.ndarray:
    """Scale an integer or float array of any depth to 0..255 (`top`: the value that becomes 255; default: read
    off the array, see `_top_of`)."""
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    if top is None:
        top = _top_of(np.issubdtype(array.dtype, np.floating), values.max(initial=0.0))
    return np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)


def _top_of(floating: bool, largest: float) -> float:
    """The value that becomes white: 1 for floats within 0..1, 65535 for integers above 255, else 255."""
    if floating:
        return 1.0 if largest <= 1.0 else 255.0
    return 65535.0 if largest > 255 else 255.0


def _top(image: Image.Image) -> float | None:
    """For a deep picture, the value that becomes white, read once off the whole picture (so that its strips
    are scaled alike); None for others."""
    if image.mode not in DEEP_MODES:
        return None
    return _top_of(image.mode == "F", float(image.getextrema()[1]))


def _to_rgb(image: Image.Image, top: float | None = None) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in DEEP_MODES:
        return Image.fromarray(_to_uint8(np.asarray(image), top)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def reduced_copy(source: str | Path | bytes, short_side: int) -> bytes | None:
    """A PNG of the picture at `short_side` (upright, RGB) when it is much larger than that and of a format that
    cannot be decoded reduced (a 24-megapixel PNG costs seconds each time it is read; a JPEG is decoded reduced
    anyway); None when the picture is fine as it is or cannot be read (its reader then says why)."""
    try:
        stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
        with stream, Image.open(stream, formats=OPENED_FORMATS) as header:
            if header.format in DECODED_REDUCED or min(header.size) <= 2 * short_side:
                return None
        picture = load_image(source, short_side=short_side)
    except (ImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG", compress_level=1)
    return encoded.getvalue()


def spread_over(items: list, count: int) -> list:
    """At most `count` of `items`, evenly spread over them (the first among them): a sample of a set of images."""
    return items[::max(1, len(items) // max(count, 1))][:count]


def list_images(folder: str | Path) -> list[Path]:
    """Image files below `folder` (recursively, by suffix), sorted; ImageError if there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder} is not a folder.")
    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not files:
        raise ImageError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def readable_images(paths) -> tuple[list[str], list[str]]:
    """(the paths that decode as images, the reasons the others do not); ImageError when none does. Each is
    decoded small (`CHECK_SIDE`: a JPEG at 1/8 scale), which finds a truncated file as a whole decode does."""
    readable, skipped = [], []
    for path in paths:
        try:
            load_image(path, max_side=CHECK_SIDE)
            readable.append(str(path))
        except ImageError as error:
            skipped.append(str(error))
    if not readable:
        raise ImageError("None of the images could be read.")
    return readable, skipped
