"""ImageNet data for the ResNet50 workload: the MLCommons validation layout,
MLPerf's reference preprocessing, and seeded synthetic stand-in images.

The MLCommons layout is a folder of JPEGs plus ``val_map.txt`` whose lines read
``ILSVRC2012_val_00000001.JPEG 65`` (file name, 0-based class index).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np

VAL_MAP_NAME = "val_map.txt"
IMAGE_SIZE = 224
#: MLPerf's ``resize_with_aspectratio`` scales the shorter side to ``int(100 * 224 / 87.5)``.
RESIZE_SHORTER_SIDE = 256
#: Per-channel (R, G, B) means subtracted by MLPerf's ``pre_process_vgg``.
CHANNEL_MEANS = np.array([123.68, 116.78, 103.94], dtype=np.float32)
_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE for 8-bit linear resizing

# Synthetic images: sizes of the noise pyramid (coarse to fine) before the final
# upsampling to 224x224; every octave gets about the same variance, which gives
# the roughly 1/f amplitude spectrum of natural images.
_PYRAMID = (4, 8, 16, 32, 64)
_CHROMA = 0.35  # weight of per-channel fields against the shared luminance field
_CHROMA_MAX_SIZE = 16  # finest pyramid level that carries colour fields
_CHUNK = 64  # images per vectorised chunk


# --------------------------------------------------------------------- val_map


def read_val_map(dataset_dir: Path, *, check_files: bool = True) -> list[tuple[str, int]]:
    """Parse ``<dataset_dir>/val_map.txt`` into ``[(file name, label), ...]`` in file order.

    Blank lines are skipped. Raises ``FileNotFoundError`` when the folder, the map
    or (with ``check_files``) a listed image is missing, and ``ValueError`` naming
    the file and line for malformed lines, negative labels or duplicate names.
    """
    directory = Path(dataset_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"ImageNet dataset folder not found: {directory}")
    map_path = directory / VAL_MAP_NAME
    if not map_path.is_file():
        raise FileNotFoundError(
            f"{map_path} not found: the MLCommons ImageNet layout is a folder of JPEGs "
            f"plus {VAL_MAP_NAME} with lines like 'ILSVRC2012_val_00000001.JPEG 65'"
        )
    entries: list[tuple[str, int]] = []
    first_line: dict[str, int] = {}
    with map_path.open(encoding="utf-8") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            name, label = _parse_val_map_line(raw, map_path, line_no)
            if name in first_line:
                raise ValueError(
                    f"{map_path}:{line_no}: duplicate image {name!r} "
                    f"(first listed on line {first_line[name]})"
                )
            if check_files and not (directory / name).is_file():
                raise FileNotFoundError(f"{map_path}:{line_no}: image {directory / name} not found")
            first_line[name] = line_no
            entries.append((name, label))
    if not entries:
        raise ValueError(f"{map_path}: no entries")
    return entries


def _parse_val_map_line(raw: str, map_path: Path, line_no: int) -> tuple[str, int]:
    where = f"{map_path}:{line_no}"
    fields = raw.split()
    if len(fields) != 2:
        raise ValueError(f"{where}: expected '<image file> <label>', got {raw.strip()!r}")
    name, label_text = fields
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{where}: image name must be a bare file name, got {name!r}")
    try:
        label = int(label_text)
    except ValueError:
        raise ValueError(f"{where}: label must be an integer, got {label_text!r}") from None
    if label < 0:
        raise ValueError(f"{where}: label must be >= 0, got {label}")
    return name, label


# --------------------------------------------------------------- preprocessing


def _import_pil() -> ModuleType:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading ImageNet JPEGs needs Pillow: pip install 'pytest-mlperf[imagenet]'"
        ) from exc
    return Image


def resized_dims(width: int, height: int) -> tuple[int, int]:
    """(width, height) after MLPerf's aspect-preserving resize: shorter side 256, truncating."""
    side = RESIZE_SHORTER_SIDE
    if height > width:
        return side, int(side * height / width)
    return int(side * width / height), side


def preprocess_image(path: Path) -> np.ndarray:
    """Load one image and preprocess it as MLPerf's reference ``pre_process_vgg`` does for
    ResNet50 on ONNX Runtime: float32 ``[3, 224, 224]`` (NCHW sample, RGB order).

    Steps: decode to RGB with Pillow (EXIF orientation applied, as ``cv2.imread``
    does), resize keeping the aspect ratio so that the shorter side is 256
    (= 224 / 0.875, the other side truncated to an integer) with OpenCV's
    ``INTER_AREA`` weights, centre-crop 224x224 (offsets truncated), subtract the
    per-channel means ``[123.68, 116.78, 103.94]``, move channels first.

    Differences from the reference, which uses OpenCV throughout: Pillow has no
    ``INTER_AREA`` (its ``BOX`` filter weighs whole pixels, not their overlap, and
    was 1-2 grey levels off on average, up to 20 at edges), so the resize is
    re-implemented here in numpy: shrinking with OpenCV's area weights and
    rounding, in float64 where OpenCV uses float32, so a rare pixel differs by one
    grey level; enlarging with OpenCV's 8-bit fixed-point arithmetic (as its x86
    SIMD code does it), which matched ``cv2.resize`` exactly in our comparisons.
    JPEG decoders (libjpeg builds, CMYK conversion) can differ by a grey level
    too. So results are close to, but not guaranteed bit-identical with, the
    reference pipeline.
    """
    image_module = _import_pil()
    from PIL import ImageOps

    with image_module.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    cropped = _resize_and_crop(np.asarray(image, dtype=np.uint8))  # [224, 224, 3]
    planes = np.ascontiguousarray(cropped.transpose(2, 0, 1), dtype=np.float32)
    planes -= CHANNEL_MEANS[:, None, None]
    return planes


def _resize_and_crop(pixels: np.ndarray) -> np.ndarray:
    """[h, w, 3] uint8 -> [224, 224, 3] whole grey levels, resized as ``cv2.INTER_AREA``."""
    height, width = pixels.shape[:2]
    new_width, new_height = resized_dims(width, height)
    top = int((new_height - IMAGE_SIZE) / 2)
    left = int((new_width - IMAGE_SIZE) / 2)
    rows, cols = slice(top, top + IMAGE_SIZE), slice(left, left + IMAGE_SIZE)
    if (new_width, new_height) == (width, height):  # cv2.resize just copies
        return pixels[rows, cols].astype(np.float64)
    if new_width <= width and new_height <= height:
        return _shrink_area(pixels, new_width, new_height, rows, cols)
    return _enlarge_area(pixels, new_width, new_height, rows, cols)


def _shrink_area(
    pixels: np.ndarray, new_width: int, new_height: int, rows: slice, cols: slice
) -> np.ndarray:
    height, width = pixels.shape[:2]
    row_weights = _area_weights(height, new_height)[rows]
    col_weights = _area_weights(width, new_width)[cols]
    planes = pixels.transpose(2, 0, 1).astype(np.float64)
    resized = (row_weights @ planes @ col_weights.T).transpose(1, 2, 0)
    # OpenCV's exact-2x path rounds half up in integers; its general path uses cvRound.
    if width == 2 * new_width and height == 2 * new_height:
        return np.floor(resized + 0.5)
    return np.rint(resized)


@lru_cache(maxsize=64)  # ImageNet has few distinct sizes; callers only read the result
def _area_weights(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] weights of ``cv2.INTER_AREA`` shrinking: each output pixel
    averages the input interval it covers, edge pixels weighted by their overlap."""
    scale = size_in / size_out
    matrix = np.zeros((size_out, size_in))
    for out in range(size_out):
        start, stop = out * scale, out * scale + scale
        cell = min(scale, size_in - start)
        first, last = int(np.ceil(start)), min(int(np.floor(stop)), size_in - 1)
        first = min(first, last)
        if first - start > 1e-3:
            matrix[out, first - 1] = (first - start) / cell
        matrix[out, first:last] = 1.0 / cell
        if stop - last > 1e-3:
            matrix[out, last] = min(stop - last, 1.0, cell) / cell
    return matrix


def _enlarge_area(
    pixels: np.ndarray, new_width: int, new_height: int, rows: slice, cols: slice
) -> np.ndarray:
    """``cv2.INTER_AREA`` enlarging: linear interpolation with area-style fractions in
    OpenCV's 8-bit fixed point (11-bit coefficients; vertical pass as its SIMD code)."""
    height, width = pixels.shape[:2]
    src_x, coef_x = _enlarge_taps(width, new_width)
    src_y, coef_y = _enlarge_taps(height, new_height)
    src_x, coef_x, src_y, coef_y = src_x[cols], coef_x[cols], src_y[rows], coef_y[rows]
    values = pixels.astype(np.int64)
    next_x = np.minimum(src_x + 1, width - 1)
    # [h, 224, 3], in units of 1/2048
    horizontal = values[:, src_x] * (_COEF_SCALE - coef_x)[:, None]
    horizontal += values[:, next_x] * coef_x[:, None]
    upper = (horizontal[src_y] >> 4) * (_COEF_SCALE - coef_y)[:, None, None] >> 16
    lower = (horizontal[np.minimum(src_y + 1, height - 1)] >> 4) * coef_y[:, None, None] >> 16
    return np.clip((upper + lower + 2) >> 2, 0, 255).astype(np.float64)


@lru_cache(maxsize=64)
def _enlarge_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel: first source pixel and the weight (out of 2048) of the next one."""
    scale, inverse = size_in / size_out, size_out / size_in
    sources = np.zeros(size_out, dtype=np.int64)
    coefficients = np.zeros(size_out, dtype=np.int64)
    for out in range(size_out):
        source = int(np.floor(out * scale))
        fraction = (out + 1) - (source + 1) * inverse
        fraction = 0.0 if fraction <= 0 else fraction - np.floor(fraction)
        if source >= size_in - 1:
            source, fraction = size_in - 1, 0.0
        sources[out], coefficients[out] = source, round(fraction * _COEF_SCALE)
    return sources, coefficients


# ------------------------------------------------------------ synthetic images


def synthetic_images(count: int, seed: int) -> np.ndarray:
    """``count`` seeded stand-ins for preprocessed ImageNet images: float32 [count, 3, 224, 224].

    Each image is a smooth random field with a roughly 1/f spectrum (a pyramid of
    bilinearly upsampled noise octaves), strongly correlated colour channels, random
    per-image brightness, colour cast, contrast and smoothness, clipped to 0..255 and
    rounded to whole grey levels like a decoded JPEG, then mean-subtracted as in
    :func:`preprocess_image`. Image ``i`` depends only on ``(seed, i)``, so a larger
    ``count`` extends a smaller one.

    The ResNet50 stand-in is calibrated on these images: changing how they are made
    changes its weights, so bump ``standins.resnet50.BUILDER_VERSION`` with it.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return synthetic_images_at(range(count), seed)


def synthetic_images_at(indices: Sequence[int], seed: int) -> np.ndarray:
    """The synthetic images numbered ``indices`` (any order, repeats allowed), float32
    ``[len(indices), 3, 224, 224]``: row ``k`` equals ``synthetic_images(n, seed)[indices[k]]``."""
    wanted = [int(index) for index in indices]
    if any(index < 0 for index in wanted):
        raise ValueError(f"image indices must be >= 0, got {min(wanted)}")
    out = np.empty((len(wanted), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    means = CHANNEL_MEANS[:, None, None]
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        # Rows of the interpolation matrix sum to 1, so the means can be added at low resolution.
        low_res = _low_res_images(seed, chunk) + means
        pixels = _upsample(low_res, _interp_matrix(IMAGE_SIZE, _PYRAMID[-1]))
        np.clip(pixels, 0.0, 255.0, out=pixels)
        np.rint(pixels, out=pixels)  # whole grey levels, as decoded from a JPEG
        np.subtract(pixels, means, out=out[start : start + len(chunk)])
    return out


def _low_res_images(seed: int, indices: Sequence[int]) -> np.ndarray:
    """Images at the finest pyramid size, [len(indices), 3, 64, 64], in mean-subtracted pixels."""
    draws = [_image_draws(seed, index) for index in indices]
    field = np.zeros((len(draws), 4, 1, 1), dtype=np.float32)  # luminance + 3 colour fields
    for level, size in enumerate(_PYRAMID):
        field = _upsample(field, _interp_matrix(size, field.shape[-1]))
        octave = np.stack([draw.octaves[level] for draw in draws])
        field[:, : octave.shape[1]] += octave
    rgb = field[:, :1] + _CHROMA * field[:, 1:]
    rgb /= rgb.std(axis=(1, 2, 3), keepdims=True) + 1e-6
    contrast = np.array([draw.contrast for draw in draws], dtype=np.float32)
    brightness = np.stack([draw.brightness for draw in draws]).astype(np.float32)
    return rgb * contrast[:, None, None, None] + brightness[:, :, None, None]


class _Draws(NamedTuple):
    octaves: list[np.ndarray]  # per pyramid level, weighted: [4 or 1, size, size]
    contrast: float
    brightness: np.ndarray  # [3]


def _image_draws(seed: int, index: int) -> _Draws:
    """All random numbers of image ``index``, from its own generator."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    slope = rng.uniform(-0.4, 0.4)  # >0: busier textures, <0: smoother images
    # Colour varies more slowly than brightness (as JPEG's chroma subsampling assumes):
    # the finest octaves only carry luminance.
    shapes = [(4 if size <= _CHROMA_MAX_SIZE else 1, size, size) for size in _PYRAMID]
    sizes = [int(np.prod(shape)) for shape in shapes]
    noise = np.split(rng.standard_normal(sum(sizes), dtype=np.float32), np.cumsum(sizes)[:-1])
    octaves = [
        np.float32(2.0 ** (slope * level)) * chunk.reshape(shape)
        for level, (shape, chunk) in enumerate(zip(shapes, noise))
    ]
    contrast = 55.0 * float(np.exp(rng.normal(0.0, 0.3)))
    brightness = rng.normal(0.0, 25.0) + rng.normal(0.0, 10.0, size=3)
    return _Draws(octaves, contrast, brightness)


def _upsample(images: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Separable resize of [..., n, n] to C-contiguous [..., m, m] with the [m, n] matrix.

    Written as two plain 2-D GEMMs (numpy's broadcasting matmul is much slower),
    ordered so that the large result needs no transposing copy.
    """
    lead, size_in = images.shape[:-2], images.shape[-1]
    size_out = matrix.shape[0]
    matrix = matrix.astype(images.dtype, copy=False)
    columns = np.swapaxes(images, -1, -2).reshape(-1, size_in) @ matrix.T  # [.., w_in, h_out]
    rows = np.swapaxes(columns.reshape(-1, size_in, size_out), -1, -2)  # [.., h_out, w_in]
    both = rows.reshape(-1, size_in) @ matrix.T  # [.. * h_out, w_out]
    return both.reshape(*lead, size_out, size_out)


@cache
def _interp_matrix(size_out: int, size_in: int) -> np.ndarray:
    """[size_out, size_in] bilinear interpolation weights (half-pixel centres, clamped edges)."""
    position = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    position = np.clip(position, 0.0, size_in - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, size_in - 1)
    weight = position - lower
    matrix = np.zeros((size_out, size_in), dtype=np.float32)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, lower), 1.0 - weight)
    np.add.at(matrix, (rows, upper), weight)
    return matrix
