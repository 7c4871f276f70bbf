"""Tiny generated source folders shared by the ingest tests (sources, tiling, assembly, run)."""

from pathlib import Path

import numpy as np
import tifffile

from tests.conftest import write_png

# JUMP Cell Painting file names: r01c01f01p01-ch1sk1fk1fl1.tiff (well, site, plane, channel)
JUMP = r"(?P<well>r\d+c\d+)f(?P<site>\d+)p\d+-ch(?P<channel>\d+)"


def rgb_folder(tmp_path: Path) -> Path:
    """SRC with two class folders: tumor/a.png (100x70 -> 3x2 tiles of 32) and normal/b.png (64x64 -> 2x2)."""
    rng = np.random.default_rng(0)
    write_png(tmp_path / "src" / "tumor" / "a.png", rng.integers(0, 255, (70, 100, 3), dtype=np.uint8))
    write_png(tmp_path / "src" / "normal" / "b.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return tmp_path / "src"


def marker_field(folder: Path, markers: list[str], size: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """One MIBI/IMC-style field: a folder of single-channel uint16 TIFFs named by marker."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    planes = {}
    for m in markers:
        planes[m] = rng.integers(0, 65535, (size, size), dtype=np.uint16)
        tifffile.imwrite(folder / f"{m}.tif", planes[m])
    return planes


def cell_painting_plate(folder: Path, wells=("r01c01", "r01c02"), sites=(1, 2), channels=5, size=64) -> dict:
    """JUMP-style names: one single-channel 16-bit file per channel, r01c01f01p01-ch1sk1fk1fl1.tiff."""
    rng = np.random.default_rng(0)
    planes = {}
    folder.mkdir(parents=True, exist_ok=True)
    for well in wells:
        for site in sites:
            for ch in range(1, channels + 1):
                plane = rng.integers(0, 4000, (size, size), dtype=np.uint16)
                plane[:8, :8] = 60000 if ch == 1 else 0  # nuclei only in the DNA channel
                tifffile.imwrite(folder / f"{well}f{site:02d}p01-ch{ch}sk1fk1fl1.tiff", plane)
                planes[(well, site, ch)] = plane
    return planes
