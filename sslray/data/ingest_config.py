"""The ingest settings: which reader, layout, tiling and intensity scaling, checked when made.

Its own module because every part of the ingest reads it (``sources``, ``tiling``,
``assembly`` and the run in ``ingest``), while it needs none of them: kept in ``ingest.py``
it would tie those modules to the run in an import cycle. Import it from
``sslray.data.ingest``, which re-exports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from sslray.artifacts.store_format import COMPRESSION
from sslray.data.intensity import Scaling
from sslray.data.readers import HDF5_SUFFIXES, MAX_PIXELS
from sslray.data.wsi import SlideTiling, is_slide


@dataclass
class IngestConfig:
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"dest": "out"}  # every stage's output URL is ``out``

    src: str = ""
    out: str = ""  # the tile store's URL (DEST on the command line)
    tile_size: int = 224
    stride: int | None = None  # grid step in pixels (slides: target-mpp pixels); None: tile_size, no overlap
    labels: str | None = None  # CSV path,label[,group][,split]; default: sub-folder names
    layout: Literal["files", "channel-folders", "channel-files"] = "files"
    channel_pattern: str | None = None  # channel-files: regex on file names with a (?P<channel>...) group
    channel_names: dict[str, str] | None = None  # channel key (file name or pattern group) -> channel name
    format: Literal["auto", "image", "slide", "hdf5"] = "auto"  # the reader; auto: from the file name
    on_error: Literal["stop", "skip"] = "stop"
    overwrite: bool = False
    channels: list[str] | None = None  # names (files), or the channel keys to keep, in order (channel layouts)
    mpp: float | None = None  # whole slides: target microns per pixel (also makes TIFFs count as slides)
    magnification: float | None = None  # whole slides: or a target objective power
    mpp_override: float | None = None  # whole slides: level-0 mpp for slides without metadata
    min_tissue: float = 0.25  # whole slides: keep tiles with at least this tissue fraction
    foreground_channel: str | None = None  # tissue_fraction from this channel (e.g. DAPI); default: channel mean
    float_max: list[float] | None = None  # float images: value mapped to full scale, one or per channel
    log1p: bool = False  # float images: log1p before scaling (skewed ion counts, e.g. IMC)
    clip_percentiles: list[float] | None = None  # [low, high]: per-channel dataset percentiles mapped to 0 and max
    compression: str = "lz4"  # Blosc codec of the store: lz4 (fast to read) or zstd (smaller)
    magnification_groups: bool = False  # BreakHis-style: magnification + field_id from the path
    workers: int | None = None  # parallel tiling tasks (Ray Data); None: one per CPU, 0: in this process
    max_pixels: int = MAX_PIXELS  # whole-image readers refuse larger images (decompression bombs); not slides

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be 0 (in this process, no Ray) or a positive number of parallel "
                             f"tiling tasks, got {self.workers}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive number of pixels, got {self.max_pixels}")
        if self.tile_size < 8:
            raise ValueError(f"tile_size must be >= 8 pixels, got {self.tile_size}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be >= 1 pixel (or unset for tile_size), got {self.stride}")
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f"min_tissue must be in [0, 1], got {self.min_tissue}")
        if self.float_max is not None and (not self.float_max or min(self.float_max) <= 0):
            raise ValueError(f"float_max must list positive values, got {self.float_max}")
        if self.layout == "channel-files":
            if not self.channel_pattern or "(?P<channel>" not in self.channel_pattern:
                raise ValueError("layout channel-files needs channel_pattern, a regex with a (?P<channel>...) group "
                                 r"(e.g. '-ch(?P<channel>\d+)' for JUMP names r01c01f01p01-ch1sk1fk1fl1.tiff)")
            try:
                re.compile(self.channel_pattern)
            except re.error as err:
                raise ValueError(f"channel_pattern {self.channel_pattern!r} is not a valid regex: {err}") from None
        if self.format not in ("auto", "image", "slide", "hdf5"):
            raise ValueError(f"format must be auto, image, slide or hdf5, got {self.format!r}")
        if self.compression not in COMPRESSION:
            raise ValueError(f"compression must be one of {sorted(COMPRESSION)}, got {self.compression!r}")
        clip = self.clip_percentiles
        if clip is not None and not (len(clip) == 2 and 0 <= clip[0] < clip[1] <= 100):
            raise ValueError(f"clip_percentiles must be two values 0 <= low < high <= 100, got {self.clip_percentiles}")

    @property
    def scaling(self) -> Scaling:
        """The scaling the user asked for, before any percentile calibration."""
        return Scaling(tuple(self.float_max) if self.float_max else None, self.log1p)

    @property
    def slide_tiling(self) -> SlideTiling:
        return SlideTiling(self.tile_size, self.mpp, self.magnification, self.mpp_override, self.min_tissue,
                           stride=self.stride)

    def reader_for(self, path: Path) -> str:
        """``slide``, ``hdf5`` or ``image``: the ``format`` asked for, or guessed from the file name
        (a plain TIFF counts as a slide when a target resolution is given)."""
        if self.format != "auto":
            return self.format
        suffix = path.suffix.lower()
        if is_slide(path) or ((self.mpp or self.magnification) and suffix in {".tif", ".tiff"}):
            return "slide"
        return "hdf5" if suffix in HDF5_SUFFIXES else "image"
