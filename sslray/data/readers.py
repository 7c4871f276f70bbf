"""Read one source image into a (C, H, W) array, whatever its file layout.

PNG/JPEG go through Pillow; TIFF (including multi-page and OME-TIFF) through tifffile,
the reference TIFF library of the microscopy community; NPY arrays through numpy (never
unpickling). Every reader returns channels first, because fluorescence images have 1 to
40+ channels and RGB is just C = 3.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

TIFF_SUFFIXES = {".tif", ".tiff", ".qptiff"}  # .ome.tif(f) ends in .tif(f); QPTIFF is a TIFF
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".npy", *TIFF_SUFFIXES}
# Whole-image readers decode everything at once: a 444 KiB deflate TIFF of 20480 x 20480 took
# 3.8 GB. 16384^2 pixels per plane is far above any microscope field and stops such bombs;
# whole slides are read by region and are exempt (docs/security.md).
MAX_PIXELS = 1 << 28


class ImageReadError(ValueError):
    """A source image cannot be used; the message names the file and the problem."""


def image_id_of(rel: str) -> str:
    """``a/b.tif`` -> ``a/b``; ``a/patches.h5#3`` -> ``a/patches#3`` (one field of a multi-image file)."""
    path, hash_, index = rel.partition("#")
    stem = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    return f"{stem}{hash_}{index}"


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding pixels."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return series.shape[series.axes.index("Y")], series.shape[series.axes.index("X")]
        if path.suffix.lower() == ".npy":
            return _npy_to_chw(np.load(path, mmap_mode="r", allow_pickle=False), path).shape[1:]
        from PIL import Image

        with Image.open(path) as image:
            return image.height, image.width
    except Exception as err:  # same spirit as read_image: name the file
        raise ImageReadError(f"{path}: cannot read the image header ({type(err).__name__}: {err})") from None


def check_pixels(path: str | Path, height: int, width: int, max_pixels: int) -> None:
    """Refuse an image larger than ``max_pixels`` per plane before decoding it."""
    if height * width > max_pixels:
        raise ImageReadError(f"{path}: image of {width} x {height} = {height * width:,} pixels is over the limit of "
                             f"{max_pixels:,} (--max-pixels / max_pixels); raise the limit if the image is genuine "
                             "and fits in memory, or read it as a whole slide (--format slide)")


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return a (C, H, W) uint8/uint16/float32 array, or raise ``ImageReadError``.

    The size is read from the header first, so an image over ``max_pixels`` is refused
    before any pixel is decoded.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError(f"{path}: unsupported image format {suffix!r} (expected one of {sorted(IMAGE_SUFFIXES)})")
    try:
        size = image_size(path)
    except ImageReadError:
        size = None  # an unreadable header: the decoder below names the problem
    if size is not None:
        check_pixels(path, *size, max_pixels)
    try:
        if suffix == ".npy":
            array = _npy_to_chw(np.load(path, allow_pickle=False), path)
        else:
            array = _read_tiff(path) if suffix in TIFF_SUFFIXES else _read_pil(path)
    except ImageReadError:
        raise
    except Exception as err:  # decoders raise many types for truncated or corrupt files
        raise ImageReadError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from None
    return _check(array, path)


def read_channel_folder(folder: str | Path, channels: list[str] | None = None, max_pixels: int = MAX_PIXELS
                        ) -> tuple[np.ndarray, list[str]]:
    """One field stored as one single-channel file per marker (MIBI/IMC exports).

    Channel names are the file names without suffix, in sorted order, or ``channels`` (which
    also selects and orders them). Returns ((C, H, W), names).
    """
    folder = Path(folder)
    files = {p.name.split(".")[0]: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    return read_channel_files(files, channels, str(folder), max_pixels)


def read_channel_files(files: dict[str, Path], channels: list[str] | None, field: str, max_pixels: int = MAX_PIXELS
                       ) -> tuple[np.ndarray, list[str]]:
    """Stack single-channel files (channel key -> file) into (C, H, W), in ``channels`` order
    or in natural key order (``ch2`` before ``ch10``). Returns (pixels, keys)."""
    names = list(channels) if channels else sorted(files, key=natural_key)
    missing = [n for n in names if n not in files]
    if missing or not names:
        raise ImageReadError(f"{field}: channel file(s) {missing or 'any'} not found (has {sorted(files)})")
    planes = []
    for name in names:
        plane = read_image(files[name], max_pixels)
        if plane.shape[0] != 1:
            raise ImageReadError(f"{files[name]}: expected one channel per file, found {plane.shape[0]}")
        if planes and (plane.shape != planes[0].shape or plane.dtype != planes[0].dtype):
            raise ImageReadError(
                f"{files[name]}: shape {plane.shape[1:]} {plane.dtype} differs from the field's other channels "
                f"({planes[0].shape[1:]} {planes[0].dtype})"
            )
        planes.append(plane)
    return np.concatenate(planes), names


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers by value: ch2 < ch10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


HDF5_SUFFIXES = {".h5", ".hdf5"}


def iter_hdf5_images(path: str | Path, batch: int = 64, max_pixels: int = MAX_PIXELS):
    """Yield (index, (C, H, W) image) from an HDF5 file with ``Images`` [N, C, H, W] and ``Names`` [C].

    This is the patch-file layout of SSL-Multiplexed-Imaging; images are read ``batch`` at a
    time so a file larger than memory streams.
    """
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ImageReadError(f"{path}: cannot open as HDF5 ({err})") from None
    with handle:
        if "Images" not in handle:
            raise ImageReadError(f"{path}: HDF5 file has no 'Images' dataset (found {sorted(handle)})")
        images = handle["Images"]
        if images.ndim != 4:
            raise ImageReadError(f"{path}: 'Images' must be [N, C, H, W], found shape {images.shape}")
        check_pixels(path, *images.shape[2:], max_pixels)
        for start in range(0, images.shape[0], batch):
            block = images[start : start + batch]
            for offset, image in enumerate(block):
                yield start + offset, _check(np.asarray(image), Path(f"{path}[{start + offset}]"))


def hdf5_channel_names(path: str | Path) -> list[str] | None:
    import h5py

    with h5py.File(path, "r") as handle:
        if "Names" not in handle:
            return None
        return [n.decode() if isinstance(n, bytes) else str(n) for n in handle["Names"][()]]


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # read_image enforces its own, configurable limit first
    with Image.open(path) as image:
        image.load()
        if image.mode in {"P", "CMYK", "LA", "PA"}:
            image = image.convert("RGBA" if "A" in image.mode else "RGB")
        array = np.asarray(image)
    if array.ndim == 2:
        return array[None]
    if array.shape[-1] == 4:  # drop alpha: it is not an imaging channel
        array = array[..., :3]
    return np.moveaxis(array, -1, 0)


def _npy_to_chw(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) -> (1, H, W); (H, W, C) with C <= 4 < H, W -> channels first; else taken as (C, H, W)."""
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise ImageReadError(f"{path}: NPY array of shape {array.shape}; expected (H, W), (C, H, W) or (H, W, C)")
    if array.shape[-1] <= 4 < min(array.shape[:2]):
        return np.moveaxis(array, -1, 0)
    return array


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
    return _to_chw(array, axes, path)


def _to_chw(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Map tifffile's axes string to (C, H, W); samples (S) and channels (C) both count."""
    if "Y" not in axes or "X" not in axes:
        raise ImageReadError(f"{path}: TIFF has no Y/X axes (axes={axes!r})")
    # Collapse singleton non-spatial axes (T, Z of size 1), keep one channel-like axis.
    keep = [i for i, a in enumerate(axes) if a in "YX" or array.shape[i] > 1]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    extra = [a for a in axes if a not in "YX"]
    if len(extra) > 1:
        raise ImageReadError(f"{path}: TIFF has more than one non-spatial axis ({axes!r}); split it first")
    if not extra:
        return array[None] if axes == "YX" else array.T[None]
    return np.moveaxis(array, [axes.index(extra[0]), axes.index("Y"), axes.index("X")], [0, 1, 2])


def _check(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 3 or 0 in array.shape:
        raise ImageReadError(f"{path}: empty or malformed image of shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ImageReadError(f"{path}: image contains NaN or infinite values")
        return array.astype(np.float32, copy=False)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype not in (np.uint8, np.uint16):
        if array.min() < 0 or array.max() > 65535:
            raise ImageReadError(f"{path}: pixel values of dtype {array.dtype} do not fit uint16")
        return array.astype(np.uint16)
    return array
