"""``sslray profile``: an embeddings table (+ a plate map) -> aggregated, normalised, published profiles.

The stage lifecycle of every sslray stage (``sslray.stage``): the destination and the plate map
are checked before any work, the run is tracked (nested under a pipeline's run) and the table is
published atomically. It holds two files: ``profiles.parquet`` (normalised, what the metrics
read) and ``profiles_raw.parquet`` (aggregated and annotated, before normalisation), so
``evaluate --protocol profiling`` can compare normalisation pipelines starting from the same raw
profiles without profiling again (docs/data_contracts.md, "Profiles table").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from sslray import storage, tracking
from sslray.artifacts.embeddings import EmbeddingsTable
from sslray.config import to_dict
from sslray.profile.aggregate import N_TILES, PERTURBATION, consensus, feature_names, site_profiles, well_profiles
from sslray.profile.config import ProfileConfig
from sslray.profile.normalize import apply_pipeline
from sslray.profile.plate_map import check_wells, join_plate_map, read_plate_map, tile_metadata
from sslray.profile.profiles import KIND, PLATE, RAW_FILE, WELL, feature_columns, write_profiles
from sslray.stage import input_name, publishing, tracked_run

log = logging.getLogger(__name__)


@dataclass
class Profiles:
    """What the stage computed: the raw and normalised tables and the counts it logs."""

    raw: pd.DataFrame
    normalized: pd.DataFrame
    n_wells: int
    n_dropped: int  # wells with tiles but no usable tile
    n_tiles: int
    n_tiles_used: int


def run_profile(cfg: ProfileConfig) -> str:
    """Profile ``cfg.embeddings`` and publish the profiles table at ``cfg.out``; returns its URL."""
    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before any work
    storage.check_destination(cfg.out, KIND, "profiles table", cfg.overwrite)
    plate_map = read_plate_map(cfg.metadata) if cfg.metadata else None
    table = EmbeddingsTable.read(cfg.embeddings)
    info = storage.read_json(storage.join(cfg.embeddings, storage.SUCCESS_MARKER))
    rows = table.table.drop_columns(["embedding"]).to_pandas()
    meta = tile_metadata(rows, cfg.embeddings)
    if plate_map is not None:  # a map of another screen fails here, before the run opens
        check_wells(plate_map, meta[[PLATE, WELL]].drop_duplicates(), cfg.metadata)
    with tracked_run(cfg.tracking, cfg.run_dir, stage="profile", input=cfg.name or input_name(cfg.embeddings),
                     config=to_dict(cfg), tags=_tags(cfg, info)) as run:
        result = compute_profiles(cfg, table, rows, meta, info, plate_map)
        features = feature_columns(result.normalized)
        with publishing(cfg.out, kind=KIND, what="profiles table", overwrite=cfg.overwrite) as publication:
            write_profiles(result.normalized, publication.staging)
            write_profiles(result.raw, publication.staging, RAW_FILE)
            publication.info.update(_info(cfg, info, result, len(features), run.run_id))
        run.log_metrics({"n_wells": result.n_wells, "n_features": len(features), "n_dropped": result.n_dropped,
                         "n_profiles": len(result.normalized), "n_tiles": result.n_tiles,
                         "n_tiles_used": result.n_tiles_used, "n_features_raw": len(feature_columns(result.raw))})
    return cfg.out


def compute_profiles(cfg: ProfileConfig, table: EmbeddingsTable, rows: pd.DataFrame, meta: pd.DataFrame,
                     info: dict, plate_map: pd.DataFrame | None) -> Profiles:
    """Tiles (``rows``, their ``meta`` from ``tile_metadata``) -> sites -> wells (-> perturbations),
    joined to the plate map (checked against the tiles with ``check_wells``) and normalised."""
    tiled = meta[[PLATE, WELL]].drop_duplicates()
    fraction = rows["tissue_fraction"].to_numpy() if "tissue_fraction" in rows else None
    if fraction is None and cfg.min_foreground > 0:
        raise ValueError(f"{cfg.embeddings} has no tissue_fraction column; min_foreground needs one (or set it to 0)")
    names = feature_names(table.dim, *channel_layout(info, cfg.embeddings))
    sites = site_profiles(meta, table.matrix(), names, cfg.method, fraction, cfg.min_foreground)
    raw = sites if cfg.level == "site" else well_profiles(sites)
    if plate_map is not None:
        raw = join_plate_map(raw, plate_map)
    if cfg.level == "perturbation" and PERTURBATION not in raw.columns:
        raise ValueError(f"level perturbation needs a perturbation column: {cfg.metadata or cfg.embeddings} has none")
    normalized = apply_pipeline(raw, cfg.normalize, cfg.control)
    n_wells = len(raw[[PLATE, WELL]].drop_duplicates())
    if cfg.level == "perturbation":
        raw, normalized = (consensus(t, PERTURBATION, cfg.consensus_method) for t in (raw, normalized))
    return Profiles(raw, normalized, n_wells, len(tiled) - n_wells, len(rows), int(sites[N_TILES].sum()))


def channel_layout(info: dict, url: str) -> tuple[list[str] | None, bool]:
    """(channels, per_channel) of the table's embedding: from its ``_SUCCESS`` (``sslray embed`` records
    them), else from the checkpoint's sslray.json and the store's channels (older tables), else unknown."""
    if "per_channel" in info:
        return info.get("channels"), bool(info["per_channel"])
    from sslray.artifacts.checkpoint import read_meta
    from sslray.artifacts.tile_store import TileStore

    try:
        per_channel = read_meta(info["checkpoint"]).per_channel
        channels = TileStore.open(info["store"]).info.channels if per_channel else None
    except (KeyError, OSError, ValueError) as err:
        log.info("%s: the channel layout is unknown (%s); features are named emb_*", url, err)
        return None, False
    return (list(channels) if channels else None), per_channel


def _tags(cfg: ProfileConfig, info: dict) -> dict[str, str]:
    tags = {"sslray.embeddings": tracking.redact(cfg.embeddings), "sslray.profiles": tracking.redact(cfg.out)}
    for key in ("checkpoint", "store"):
        if info.get(key):
            tags[f"sslray.{key}"] = tracking.redact(str(info[key]))
    return tags


def _info(cfg: ProfileConfig, info: dict, result: Profiles, n_features: int, run_id: str | None) -> dict:
    """The ``_SUCCESS`` record: counts, the recipe, and the lineage (the embeddings and what they came from)."""
    upstream = {k: tracking.redact(str(info[k])) for k in ("checkpoint", "store", "source", "format") if info.get(k)}
    return {"n_wells": result.n_wells, "n_profiles": len(result.normalized), "n_features": n_features,
            "n_features_raw": len(feature_columns(result.raw)), "n_dropped": result.n_dropped, "level": cfg.level,
            "method": cfg.method, "normalize": cfg.normalize, "control": cfg.control,
            "files": {"profiles": "profiles.parquet", "raw": RAW_FILE},
            "metadata": tracking.redact(cfg.metadata) if cfg.metadata else None,
            "lineage": {"embeddings": tracking.redact(cfg.embeddings), **upstream}, "mlflow_run_id": run_id}
