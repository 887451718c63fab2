"""Every kind of bad or unusual image either becomes RGB or gets a clear ImageError."""
import io

import numpy as np
import pytest
from PIL import Image

from interpret.errors import ImageError
from interpret.images import load_image


def encoded(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image")
    with pytest.raises(ImageError, match="'notes.jpg' is not an image"):
        load_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nothing.png")


def test_truncated_jpeg(tmp_path):
    data = encoded(Image.effect_noise((200, 200), 60).convert("RGB"), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(path)


@pytest.mark.parametrize("size", [(1, 1), (3, 200)])
def test_tiny_images(size):
    with pytest.raises(ImageError, match="too small"):
        load_image(encoded(Image.new("RGB", size)))


def test_decompression_bomb():
    bomb = encoded(Image.new("1", (9000, 9000)))  # 81 megapixels in a few kilobytes
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="too large"):
        load_image(bomb)


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGBA", (32, 32), (255, 0, 0, 0)),
    lambda: Image.new("LA", (32, 32), (10, 128)),
    lambda: Image.new("CMYK", (32, 32), (0, 255, 255, 0)),
    lambda: Image.new("L", (32, 32), 100),
    lambda: Image.new("1", (32, 32), 1),
    lambda: Image.new("I;16", (32, 32), 40000),
    lambda: Image.new("I", (32, 32), 65535),
    lambda: Image.new("F", (32, 32), 0.5),
    lambda: Image.new("P", (32, 32), 3),
])
def test_unusual_modes_become_rgb(make):
    image = load_image(make())
    assert image.mode == "RGB" and image.size == (32, 32)


def test_transparency_is_composited_over_white():
    assert load_image(Image.new("RGBA", (16, 16), (255, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("RGBA", (16, 16), (255, 0, 0, 255))).getpixel((0, 0)) == (255, 0, 0)


def test_sixteen_bit_png_keeps_its_brightness(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16)).save(path)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_file(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(path, "JPEG")
    red, green, blue = load_image(path).getpixel((20, 20))
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize("array", [
    np.zeros((20, 30), dtype=np.uint8),
    np.zeros((20, 30, 1), dtype=np.uint8),
    np.ones((20, 30, 3), dtype=np.float32),
    np.full((20, 30, 4), 65535, dtype=np.uint16),
])
def test_arrays(array):
    image = load_image(array)
    assert image.mode == "RGB" and image.size == (30, 20)


def test_bad_array_shape():
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((20, 30, 5)))


def test_wrong_type():
    with pytest.raises(ImageError, match="Expected an image"):
        load_image(42)


def test_a_large_picture_is_read_at_the_size_a_model_needs_and_a_large_png_extracted_smaller(tmp_path):
    import io

    from PIL import Image

    from interpret.images import load_image, reduced_copy

    photo = Image.new("RGB", (4000, 3000), (200, 40, 40))
    photo.save(tmp_path / "big.jpg", quality=90)
    photo.save(tmp_path / "big.png")
    for name in ("big.jpg", "big.png"):
        read = load_image(tmp_path / name, short_side=448)
        assert min(read.size) == 448 and abs(read.size[0] / read.size[1] - 4 / 3) < 0.01
    assert reduced_copy(tmp_path / "big.jpg", 224) is None  # a JPEG is decoded reduced anyway
    smaller = Image.open(io.BytesIO(reduced_copy(tmp_path / "big.png", 224)))
    assert smaller.format == "PNG" and min(smaller.size) == 224 and smaller.getpixel((5, 5)) == (200, 40, 40)
    assert reduced_copy((tmp_path / "big.png").read_bytes()[:1000], 224) is None  # damaged: its reader says why
    Image.new("RGB", (300, 300)).save(tmp_path / "small.png")
    assert reduced_copy(tmp_path / "small.png", 224) is None
