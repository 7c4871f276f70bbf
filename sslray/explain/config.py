"""``ExplainConfig``: which checkpoint, which images (from a tile store or straight from files), where to write.

Checked when made, so a wrong combination (two inputs, a class without a head) fails before the
encoder is loaded. The ``tiling`` keys are ingest's own (``IngestConfig``): ``--slides`` input is
discovered and tiled exactly as ``sslray ingest`` would (``tiling.mpp``, ``tiling.tile_size``,
``tiling.mpp_override``...); ``tiling.mpp_override`` is also the level-0 resolution of a stored
slide whose file cannot be opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sslray import tracking
from sslray.data.ingest_config import IngestConfig

TISSUE = "tissue"  # mask_channel value: the slide's tissue mask instead of a channel's foreground


@dataclass
class ExplainConfig:
    checkpoint: str = ""
    store: str = ""  # a tile store, or
    slides: str = ""  # a folder, one file, or a CSV path[,label,...] of slides/images, read as ingest does
    tiling: IngestConfig = field(default_factory=IngestConfig)  # how slides are read and tiled (as ingest)
    out: str = ""  # the explanations folder (the published output)
    images: list[str] = field(default_factory=list)  # image_id or slide_id values; default: the first n_images
    n_images: int = 3
    head: str = ""  # head.safetensors of `sslray evaluate --protocol linear`: Grad-CAM of a CNN encoder
    class_name: str | None = None  # the head's class to explain; default: each tile's predicted class
    mask_channel: str | None = None  # blank the map off this channel's foreground (e.g. DAPI), or "tissue"
    max_tiles: int = 256  # per image, in manifest order (the top rows first)
    batch_size: int = 32
    max_side: int = 1024  # canvas pixels on the longer side at most
    name: str = ""  # what the MLflow run calls the input; default: the out folder's name
    overwrite: bool = False
    run_dir: str = "sslray-runs"  # where the default (SQLite) MLflow store lives
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    def __post_init__(self) -> None:
        missing = [key for key in ("checkpoint", "out") if not getattr(self, key)]
        if missing:
            raise ValueError(f"{missing[0]} is required")
        if len([given for given in (self.store, self.slides) if given]) != 1:
            raise ValueError("give exactly one input: store (a tile store) or slides (a folder, file or CSV of images)")
        for key, low in (("n_images", 1), ("max_tiles", 1), ("batch_size", 1), ("max_side", 16)):
            if getattr(self, key) < low:
                raise ValueError(f"{key} must be >= {low}, got {getattr(self, key)}")
        if self.class_name is not None and not self.head:
            raise ValueError(f"class_name {self.class_name!r} names a class of a linear head: give head (--head FILE)")
        if len(set(self.images)) != len(self.images):
            raise ValueError(f"images lists an image twice: {self.images}")
