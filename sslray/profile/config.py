"""``ProfileConfig``: the ``sslray profile`` config (configs/profile/cellpainting.yaml).

The defaults are CellPaintSSL's (Kim et al. 2023) and uniDINO's: well profiles as the mean of
their sites, every tile kept (``min_foreground`` 0), then ``variance_filter`` (1e-5), ``spherize``
(ZCA-cor on the negative controls, over all plates) and ``mad_robustize`` per plate. The controls
are the wells whose plate-map ``control`` column is true (``Metadata_control == True``); a screen
whose plate map only names its DMSO wells sets ``control: "Metadata_perturbation == 'DMSO'"``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from sslray import tracking
from sslray.profile.normalize import DEFAULT_CONTROL, DEFAULT_PIPELINE, parse_pipeline


@dataclass
class ProfileConfig:
    """``sslray profile``: an embeddings table (+ a plate map) -> a published profiles table."""

    embeddings: str = ""  # input: a tile embeddings table (sslray embed or features import)
    out: str = ""  # output: the profiles table URL
    metadata: str | None = None  # plate map CSV keyed by plate + well; None: the table's own columns
    level: Literal["site", "well", "perturbation"] = "well"
    method: Literal["mean", "median"] = "mean"  # tiles -> site; sites -> well is always the mean
    consensus_method: Literal["mean", "median"] = "median"  # wells -> perturbation (level perturbation)
    min_foreground: float = 0.0  # tiles whose tissue_fraction is below are left out (0: keep all)
    normalize: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_PIPELINE))  # []: raw
    control: str = DEFAULT_CONTROL  # pandas query over the Metadata_ columns selecting negative controls
    overwrite: bool = False
    name: str = ""  # what the MLflow run calls the input (``profile NAME``); default: the table's folder name
    run_dir: str = "sslray-runs"  # where the default (SQLite) MLflow store lives
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_foreground <= 1.0:
            raise ValueError(f"min_foreground is a fraction of the tile, between 0 and 1; got {self.min_foreground}")
        missing = [key for key in ("embeddings", "out", "control") if not getattr(self, key)]
        if missing:
            raise ValueError(f"{missing[0]} is required")
        parse_pipeline(self.normalize)  # an unknown step or option fails here, before any work
