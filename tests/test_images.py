import os
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from dediffusion.data.images import (
    IMAGE_EXTENSIONS,
    ImageFolder,
    ImageLoadError,
    NoImagesError,
    find_images,
    load_batch,
    load_image,
    open_rgb,
    resize_center_crop,
    to_pil,
    to_tensor,
)

RED, WHITE = (255, 0, 0), (255, 255, 255)


def save(image, path):
    image.save(path)
    return path


def noise_file(path, size=(64, 64)):
    return save(Image.effect_noise(size, 50).convert("RGB"), path)


def fake_png(path, width, height):
    """A PNG whose header claims width x height but holds no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b""))
    return path


def assert_load_error(path, *words):
    with pytest.raises(ImageLoadError) as info:
        open_rgb(path)
    message = str(info.value)
    assert path.name in message and info.value.path == path
    for word in words:
        assert word in message
    return info.value


# ----------------------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_raises(tmp_path, suffix):
    path = noise_file(tmp_path / f"noise{suffix}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_load_error(path, "truncated")


def test_truncated_file_raises_even_if_pil_is_told_to_allow_it(tmp_path, monkeypatch):
    path = noise_file(tmp_path / "noise.jpg")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert_load_error(path, "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever set it


def test_text_file_named_png_raises(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    assert_load_error(path, "not a recognised image format")


def test_zero_byte_file_raises(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    assert_load_error(path, "empty")


def test_directory_named_like_an_image_raises(tmp_path):
    path = tmp_path / "x.png"
    path.mkdir()
    assert_load_error(path, "directory")


def test_missing_file_raises(tmp_path):
    assert_load_error(tmp_path / "gone.png", "does not exist")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file_raises(tmp_path):
    path = noise_file(tmp_path / "secret.png")
    path.chmod(0)
    assert_load_error(path, "permission denied")


def test_load_error_pickles_with_its_fields(tmp_path):
    error = ImageLoadError(tmp_path / "a.png", "file is truncated")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


# ------------------------------------------------------------------------------- decompression bombs


def test_image_over_max_pixels_raises(tmp_path):
    path = noise_file(tmp_path / "big.png", size=(40, 30))
    with pytest.raises(ImageLoadError, match=r"big\.png.*too large.*max_pixels"):
        open_rgb(path, max_pixels=40 * 30 - 1)
    assert open_rgb(path, max_pixels=40 * 30).size == (40, 30)
    assert open_rgb(path, max_pixels=None).size == (40, 30)


def test_max_pixels_is_checked_from_the_header_before_decoding(tmp_path):
    path = fake_png(tmp_path / "bomb.png", 1000, 1000)  # decoding it would fail as corrupt
    with pytest.raises(ImageLoadError, match=r"bomb\.png.*too large.*1000x1000"):
        open_rgb(path, max_pixels=999_999)
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        open_rgb(path)


def test_pil_decompression_bomb_error_becomes_load_error(tmp_path):
    path = fake_png(tmp_path / "huge.png", 100_000, 100_000)  # over PIL's own hard limit
    with pytest.raises(ImageLoadError, match=r"huge\.png.*too large"):
        open_rgb(path, max_pixels=None)


# -------------------------------------------------------------------------------------- colour modes


def test_cmyk_jpeg_has_correct_colours(tmp_path):
    path = save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    image = open_rgb(path)
    assert image.mode == "RGB"
    assert np.abs(np.array(image.getpixel((4, 4))) - RED).max() <= 3


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535, 257 * 100]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode == "I;16"
    pixels = np.array(open_rgb(path))  # (1, 4, 3)
    np.testing.assert_array_equal(pixels[0], [[0] * 3, [128] * 3, [255] * 3, [100] * 3])


def test_float_image_in_unit_range_is_scaled(tmp_path):
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    path = save(Image.fromarray(values, mode="F"), tmp_path / "float.tif")
    assert np.array(open_rgb(path))[0, :, 0].tolist() == [0, 128, 255]


def test_rgba_is_composited_over_white(tmp_path):
    image = Image.new("RGBA", (3, 1))
    image.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
    loaded = open_rgb(save(image, tmp_path / "alpha.png"))
    assert loaded.mode == "RGB"
    assert [loaded.getpixel((x, 0)) for x in range(3)] == [WHITE, RED, (127, 127, 127)]


def test_grayscale_becomes_gray_rgb(tmp_path):
    loaded = open_rgb(save(Image.new("L", (2, 2), 100), tmp_path / "gray.png"))
    assert loaded.mode == "RGB" and loaded.getpixel((1, 1)) == (100, 100, 100)


def test_palette_transparency_becomes_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255])
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "pal.png", transparency=1)
    loaded = open_rgb(tmp_path / "pal.png")
    assert [loaded.getpixel((x, 0)) for x in range(2)] == [RED, WHITE]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10))
    image.paste(WHITE, (0, 0, 4, 4))  # mark the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    loaded = open_rgb(tmp_path / "rotated.jpg")
    assert loaded.size == (10, 20)
    assert min(loaded.getpixel((8, 1))) > 200  # the mark is now top-right
    assert max(loaded.getpixel((1, 1))) < 50


# -------------------------------------------------------------------------------------- finding files


def test_find_images_searches_recursively_and_skips_hidden(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    wanted = [noise_file(tmp_path / "b.JpG"), noise_file(tmp_path / "sub" / "A.PNG")]
    noise_file(tmp_path / ".hidden.png")
    noise_file(tmp_path / ".git" / "x.png")
    (tmp_path / "notes.txt").write_text("hi")
    assert find_images(tmp_path) == sorted(wanted)
    assert find_images(str(tmp_path)) == find_images([tmp_path, wanted[0]])  # str ok, no duplicates


def test_find_images_keeps_explicit_files_whatever_their_suffix(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hi")
    assert find_images([path]) == [path]
    with pytest.raises(ImageLoadError, match="notes.txt"):
        ImageFolder(path, size=8)[0]


def test_empty_folder_raises_no_images_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(NoImagesError) as info:
        find_images(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert all(ext in str(info.value) for ext in IMAGE_EXTENSIONS)


def test_nonexistent_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_images([tmp_path / "nowhere"])


# ---------------------------------------------------------------------------------- tensors, resizing


def test_resize_center_crop_keeps_the_centre_of_a_wide_image():
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste(RED, (10, 0, 30, 20))  # the middle half is red
    cropped = resize_center_crop(image, 10)
    assert cropped.size == (10, 10)
    assert cropped.getpixel((5, 5)) == RED
    assert resize_center_crop(image.rotate(90, expand=True), 10).size == (10, 10)


def test_to_tensor_and_to_pil_round_trip():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    pixels[0, 0], pixels[0, 1] = 0, 255
    tensor = to_tensor(Image.fromarray(pixels))
    assert tensor.shape == (3, 5, 7) and tensor.dtype == torch.float32
    assert tensor.min() == -1 and tensor.max() == 1
    np.testing.assert_array_equal(np.array(to_pil(tensor)), pixels)
    batch = to_pil(torch.stack([tensor, tensor]))
    assert isinstance(batch, list) and len(batch) == 2


def test_to_pil_clamps_and_checks_shape():
    image = to_pil(torch.tensor([-3.0, 0.0, 3.0]).view(3, 1, 1))
    assert image.getpixel((0, 0)) == (0, 128, 255)
    with pytest.raises(ValueError, match="shaped"):
        to_pil(torch.zeros(1, 4, 4))


def test_to_tensor_rejects_non_rgb():
    with pytest.raises(ValueError, match="open_rgb"):
        to_tensor(Image.new("L", (2, 2)))


# --------------------------------------------------------------------------------- datasets, batches


def test_load_image_gives_square_tensor_in_range(tmp_path):
    tensor = load_image(noise_file(tmp_path / "a.png", size=(30, 20)), 16)
    assert tensor.shape == (3, 16, 16) and -1 <= tensor.min() and tensor.max() <= 1


def test_load_batch_skips_bad_files_and_reports_them(tmp_path):
    noise_file(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("broken")
    noise_file(tmp_path / "c.png")
    dataset = ImageFolder(tmp_path, size=8)
    assert len(dataset) == 3 and [p.name for p in dataset.paths] == ["a.png", "b.png", "c.png"]
    images, loaded, errors = load_batch(dataset, [2, 1, 0, 2])
    assert images.shape == (3, 3, 8, 8) and loaded == [0, 2, 3]  # positions into the index list
    assert len(errors) == 1 and errors[0].path.name == "b.png" and "b.png" in str(errors[0])
    assert torch.equal(images[0], dataset[2]) and torch.equal(images[1], dataset[0])


def test_load_batch_with_nothing_loaded_is_empty(tmp_path):
    (tmp_path / "b.png").write_text("broken")
    images, loaded, errors = load_batch(ImageFolder(tmp_path, size=8), [0])
    assert images.shape == (0, 3, 8, 8) and loaded == [] and len(errors) == 1
