"""Tests of the ImageNet workload data: val_map parsing, preprocessing, synthetic images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_mlperf.runner.workloads import imagenet
from pytest_mlperf.runner.workloads.imagenet import (
    CHANNEL_MEANS,
    preprocess_image,
    read_val_map,
    resized_dims,
    synthetic_images,
    synthetic_images_at,
)

# ----------------------------------------------------------------- val_map


def _dataset(tmp_path: Path, text: str, images: tuple[str, ...] = ()) -> Path:
    (tmp_path / "val_map.txt").write_text(text, encoding="utf-8")
    for name in images:
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_read_val_map(tmp_path: Path) -> None:
    names = ("ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG")
    _dataset(tmp_path, f"{names[0]} 65\n\n{names[1]}\t970  \n", names)
    assert read_val_map(tmp_path) == [(names[0], 65), (names[1], 970)]


def test_read_val_map_without_checking_files(tmp_path: Path) -> None:
    _dataset(tmp_path, "a.JPEG 0\nb.JPEG 999\n")
    assert read_val_map(tmp_path, check_files=False) == [("a.JPEG", 0), ("b.JPEG", 999)]


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        read_val_map(tmp_path / "nowhere")


def test_missing_val_map(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"val_map\.txt not found"):
        read_val_map(tmp_path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("b.JPEG", "expected '<image file> <label>'"),
        ("b.JPEG 1 extra", "expected '<image file> <label>'"),
        ("b.JPEG cat", "label must be an integer, got 'cat'"),
        ("b.JPEG 1.5", "label must be an integer"),
        ("b.JPEG -3", "label must be >= 0"),
        ("../b.JPEG 3", "image name must be a bare file name"),
        ("a.JPEG 4", "duplicate image 'a.JPEG' \\(first listed on line 1\\)"),
    ],
)
def test_bad_val_map_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    _dataset(tmp_path, f"a.JPEG 1\n{line}\n", ("a.JPEG", "b.JPEG"))
    with pytest.raises(ValueError, match=rf"val_map\.txt:2: {message}"):
        read_val_map(tmp_path)


def test_missing_image_names_line(tmp_path: Path) -> None:
    _dataset(tmp_path, "a.JPEG 1\nmissing.JPEG 2\n", ("a.JPEG",))
    with pytest.raises(FileNotFoundError, match=r"val_map\.txt:2: image .*missing\.JPEG not found"):
        read_val_map(tmp_path)


def test_empty_val_map(tmp_path: Path) -> None:
    _dataset(tmp_path, "\n\n")
    with pytest.raises(ValueError, match="no entries"):
        read_val_map(tmp_path)


# ----------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    ("size", "expected"),
    [((500, 375), (341, 256)), ((375, 500), (256, 341)), ((256, 256), (256, 256)),
     ((100, 80), (320, 256)), ((1000, 999), (256, 256))],
)
def test_resized_dims_match_reference(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert resized_dims(*size) == expected


def _write_image(path: Path, array: np.ndarray, **save_args: object) -> Path:
    image_module = pytest.importorskip("PIL.Image")
    image_module.fromarray(array).save(path, **save_args)
    return path


@pytest.mark.parametrize("size", [(375, 500), (500, 375), (60, 90)])  # (height, width)
def test_solid_color_jpeg(tmp_path: Path, size: tuple[int, int]) -> None:
    rgb = np.array([200, 100, 50], dtype=np.uint8)
    pixels = np.broadcast_to(rgb, (*size, 3)).copy()
    path = _write_image(tmp_path / "solid.JPEG", pixels, quality=95)
    out = preprocess_image(path)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32 and out.flags.c_contiguous
    expected = rgb.astype(np.float32) - CHANNEL_MEANS  # [76.32, -16.78, -53.94]
    np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None], out.shape), atol=2.0)


def test_center_crop_geometry_and_channel_order(tmp_path: Path) -> None:
    # 512x256 (width x height) needs no resize; the crop starts at column (512-224)/2 = 144,
    # so the red/blue boundary at column 256 lands on output column 112.
    pixels = np.zeros((256, 512, 3), dtype=np.uint8)
    pixels[:, :256] = (255, 0, 0)
    pixels[:, 256:] = (0, 0, 255)
    out = preprocess_image(_write_image(tmp_path / "halves.png", pixels))
    red = np.array([255, 0, 0], dtype=np.float32) - CHANNEL_MEANS
    blue = np.array([0, 0, 255], dtype=np.float32) - CHANNEL_MEANS
    half = (3, 224, 112)
    np.testing.assert_array_equal(out[:, :, :112], np.broadcast_to(red[:, None, None], half))
    np.testing.assert_array_equal(out[:, :, 112:], np.broadcast_to(blue[:, None, None], half))


def test_grayscale_image_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.tile(np.arange(300, dtype=np.uint16)[None, :] % 256, (300, 1)).astype(np.uint8)
    out = preprocess_image(_write_image(tmp_path / "gray.png", gray))
    restored = out + CHANNEL_MEANS[:, None, None]
    np.testing.assert_array_equal(restored[0], restored[1])
    np.testing.assert_array_equal(restored[1], restored[2])


def test_exact_half_size_averages_blocks_rounding_half_up(tmp_path: Path) -> None:
    # 512x600 -> 256x300 is OpenCV's exact-2x area path: mean of each 2x2 block, half up.
    pixels = np.zeros((600, 512, 3), dtype=np.uint8)
    pixels[::2, :, 0] = 1  # every block of the red plane sums to 2 -> mean 0.5 -> 1
    pixels[:, :, 1] = 100
    pixels[1::2, 1::2, 2] = 10  # blocks sum to 10 -> mean 2.5 -> 3
    out = preprocess_image(_write_image(tmp_path / "blocks.png", pixels))
    restored = out + CHANNEL_MEANS[:, None, None]
    np.testing.assert_allclose(restored[0], 1.0, atol=1e-4)
    np.testing.assert_allclose(restored[1], 100.0, atol=1e-4)
    np.testing.assert_allclose(restored[2], 3.0, atol=1e-4)


def test_area_weights_match_opencv_definition() -> None:
    # 3 -> 2 pixels: each output covers 1.5 input pixels
    np.testing.assert_allclose(
        imagenet._area_weights(3, 2), [[2 / 3, 1 / 3, 0.0], [0.0, 1 / 3, 2 / 3]]
    )
    for size_in, size_out in [(500, 341), (375, 256), (1000, 256)]:
        weights = imagenet._area_weights(size_in, size_out)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0)


def test_enlarging_keeps_solid_colour_exact(tmp_path: Path) -> None:
    pixels = np.broadcast_to(np.array([10, 128, 250], dtype=np.uint8), (90, 120, 3)).copy()
    out = preprocess_image(_write_image(tmp_path / "small.png", pixels))
    expected = np.array([10, 128, 250], dtype=np.float32) - CHANNEL_MEANS
    np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None], out.shape), atol=1e-4)


def test_missing_pillow_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pytest-mlperf\[imagenet\]"):
        preprocess_image(tmp_path / "any.JPEG")


# -------------------------------------------------------- synthetic images


def test_synthetic_images_shape_and_determinism() -> None:
    first = synthetic_images(6, seed=3)
    assert first.shape == (6, 3, 224, 224) and first.dtype == np.float32
    np.testing.assert_array_equal(first, synthetic_images(6, seed=3))
    np.testing.assert_array_equal(first[:2], synthetic_images(2, seed=3))  # prefix-stable
    assert not np.array_equal(first, synthetic_images(6, seed=4))
    assert synthetic_images(0, seed=3).shape == (0, 3, 224, 224)


def test_synthetic_images_look_like_preprocessed_photos() -> None:
    images = synthetic_images(32, seed=11)
    pixels = images + CHANNEL_MEANS[:, None, None]
    assert pixels.min() >= 0.0 and pixels.max() <= 255.0
    np.testing.assert_array_equal(pixels, np.rint(pixels))  # whole grey levels, as from a JPEG
    assert np.all(np.abs(images.mean(axis=(0, 2, 3))) < 20.0)
    assert np.all((35.0 < images.std(axis=(0, 2, 3))) & (images.std(axis=(0, 2, 3)) < 80.0))
    # Spatially smooth, unlike white noise, and with correlated colour channels.
    neighbours = np.corrcoef(images[..., :-1].ravel(), images[..., 1:].ravel())[0, 1]
    assert neighbours > 0.9
    assert np.corrcoef(images[:, 0].ravel(), images[:, 2].ravel())[0, 1] > 0.6
    # Images differ from each other.
    assert np.std(images.mean(axis=(1, 2, 3))) > 5.0


def test_synthetic_images_at_picks_images_by_index() -> None:
    full = synthetic_images(6, seed=9)
    picked = synthetic_images_at(np.array([5, 2, 5, 0]), seed=9)
    np.testing.assert_array_equal(picked, full[[5, 2, 5, 0]])
    assert synthetic_images_at([], seed=9).shape == (0, 3, 224, 224)


def test_synthetic_images_reject_negative_arguments() -> None:
    with pytest.raises(ValueError, match="count"):
        synthetic_images(-1, seed=0)
    with pytest.raises(ValueError, match="indices"):
        synthetic_images_at([3, -1], seed=0)


def test_interpolation_matrix_rows_sum_to_one() -> None:
    matrix = imagenet._interp_matrix(224, 64)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)
