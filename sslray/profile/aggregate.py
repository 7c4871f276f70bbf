"""Tiles -> site -> well (-> perturbation) profiles: NaN-aware means or medians of embeddings.

A site (one field of view: ``image_id``, or plate + well + site) is the mean or median of its
tiles; a well is the mean of its sites; a perturbation is the consensus (median by default, as
pycytominer's ``consensus``) of its wells. Tiles with too little foreground (``tissue_fraction``
below ``min_foreground``: empty background, no cells) are set to NaN and skipped, as uniDINO
aggregates with ``nanmean``, so an empty tile never pulls a profile towards the background's
embedding; a NaN in a tile's embedding is skipped the same way. A site or well left with no
usable tile is dropped with a warning naming it, not kept as a row of NaNs.

Feature columns are named by channel when the checkpoint is channel-agnostic (C blocks of
``embed_dim``, one per channel, in the store's channel order): ``DNA_000 ... Mito_383``, so a
feature says which stain it came from; otherwise ``emb_000 ...``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from sslray.profile.profiles import META_PREFIX, PLATE, SITE, WELL

log = logging.getLogger(__name__)

LEVELS = ("site", "well", "perturbation")
METHODS = ("mean", "median")
PERTURBATION = "Metadata_perturbation"
N_TILES = "Metadata_n_tiles"  # usable tiles behind a site or well
N_SITES = "Metadata_n_sites"
N_WELLS = "Metadata_n_wells"
SITE_KEY = [PLATE, WELL, SITE]
WELL_KEY = [PLATE, WELL]


def feature_names(dim: int, channels: list[str] | None = None, per_channel: bool = False) -> list[str]:
    """``DNA_000 ...`` per channel block for a channel-agnostic embedding, else ``emb_000 ...``."""
    if per_channel and channels:
        if dim % len(channels):
            raise ValueError(f"embeddings of width {dim} do not split into {len(channels)} channel blocks "
                             f"({channels})")
        block = dim // len(channels)
        width = max(3, len(str(block - 1)))
        return [f"{channel}_{i:0{width}d}" for channel in channels for i in range(block)]
    width = max(3, len(str(dim - 1)))
    return [f"emb_{i:0{width}d}" for i in range(dim)]


def usable_features(features: np.ndarray, tissue_fraction: np.ndarray | None, min_foreground: float) -> np.ndarray:
    """A copy of ``features`` with the rows of tiles below ``min_foreground`` set to NaN (left out of every mean).

    float32, as the embeddings are: a screen's tile table is the largest array the stage holds
    (a million tiles x 1,920 features is 7.7 GB in float32), and a mean of a few dozen tiles
    loses nothing a profile keeps; the site and well profiles are normalised in float64.
    """
    values = np.array(features, dtype=np.float32)
    if tissue_fraction is not None and min_foreground > 0:
        values[np.asarray(tissue_fraction, dtype=np.float64) < min_foreground] = np.nan  # NaN fraction: left out
    return values


def site_profiles(meta: pd.DataFrame, features: np.ndarray, names: list[str], method: str = "mean",
                  tissue_fraction: np.ndarray | None = None, min_foreground: float = 0.0) -> pd.DataFrame:
    """One row per plate + well + site: the ``method`` of its usable tiles, with ``Metadata_n_tiles``."""
    _check_method(method)
    missing = [c for c in SITE_KEY if c not in meta.columns]
    if missing:
        raise ValueError(f"tile metadata lacks {missing}; tiles are grouped by {SITE_KEY}")
    values = pd.DataFrame(usable_features(features, tissue_fraction, min_foreground), columns=names, index=meta.index)
    counts = values.notna().all(axis=1).groupby([meta[c] for c in SITE_KEY], sort=True).sum().rename(N_TILES)
    grouped = values.groupby([meta[c] for c in SITE_KEY], sort=True).agg(method)
    return _finish(grouped, counts, meta, SITE_KEY, "site")


def well_profiles(sites: pd.DataFrame) -> pd.DataFrame:
    """One row per plate + well: the mean of its sites' profiles, with ``Metadata_n_sites`` and ``Metadata_n_tiles``.

    A mean, whatever ``method`` made the sites: a well has few sites (9 in JUMP, often 1-4), a
    per-feature median of so few vectors is not a robust summary but a jump between them, and
    each site counts once however many tiles it had, so one crowded field does not outweigh the
    others.
    """
    features = [c for c in sites.columns if not str(c).startswith(META_PREFIX)]
    keys = [sites[c] for c in WELL_KEY]
    grouped = sites[features].groupby(keys, sort=True).mean()
    counts = sites.groupby(keys, sort=True)[N_TILES].sum() if N_TILES in sites else None
    wells = _finish(grouped, counts, sites.drop(columns=[SITE, N_TILES], errors="ignore"), WELL_KEY, "well")
    n_sites = sites.groupby(keys, sort=True).size().rename(N_SITES)
    wells.insert(len(WELL_KEY), N_SITES, n_sites.loc[list(zip(wells[PLATE], wells[WELL]))].to_numpy())
    return wells


def consensus(wells: pd.DataFrame, by: str = PERTURBATION, method: str = "median") -> pd.DataFrame:
    """One row per value of ``by`` (a perturbation): the ``method`` of its wells' profiles, with
    ``Metadata_n_wells``; metadata constant within each group (MoA, control) is kept."""
    _check_method(method)
    if by not in wells.columns:
        known = [c for c in wells.columns if str(c).startswith(META_PREFIX)]
        raise ValueError(f"the perturbation level needs a {by!r} column (a plate map or tiles with a "
                         f"perturbation column); the profiles have {known}")
    unnamed = wells[by].isna()
    if unnamed.any():
        log.warning("%d well(s) with no %s are left out of the consensus: %s", int(unnamed.sum()), by,
                    _names(wells[unnamed]))
        wells = wells[~unnamed]
    features = [c for c in wells.columns if not str(c).startswith(META_PREFIX)]
    grouped = wells[features].groupby(wells[by], sort=True).agg(method)
    counts = wells.groupby(by, sort=True).size().rename(N_WELLS)
    meta = wells.drop(columns=[PLATE, WELL, SITE, N_SITES, N_TILES], errors="ignore")
    return _finish(grouped, counts, meta, [by], "perturbation")


def _finish(grouped: pd.DataFrame, counts: pd.Series | None, meta: pd.DataFrame, keys: list[str],
            level: str) -> pd.DataFrame:
    """Grouped features + the keys, the count and the metadata constant within every group; empty groups dropped."""
    empty = grouped.isna().all(axis=1)
    if empty.any():
        dropped = [" / ".join(map(str, k if isinstance(k, tuple) else (k,))) for k in grouped.index[empty]]
        log.warning("%d %s(s) have no usable tile and are dropped: %s", len(dropped), level, dropped[:10])
        grouped = grouped[~empty]
    out = grouped.reset_index()
    out.columns = [*keys, *grouped.columns]
    if counts is not None:
        out.insert(len(keys), counts.name, counts.loc[grouped.index].to_numpy())
    carried = _constant_columns(meta, keys)
    if len(carried.columns):
        out = out.merge(carried, on=keys, how="left")
    order = [c for c in out.columns if str(c).startswith(META_PREFIX)]
    return out[order + [c for c in out.columns if c not in order]]


def _constant_columns(meta: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The metadata columns that hold one value within every group of ``keys``, one row per group."""
    others = [c for c in meta.columns if str(c).startswith(META_PREFIX) and c not in keys]
    if not others:
        return pd.DataFrame(columns=keys)
    grouped = meta.groupby(keys, sort=True, dropna=False)[others]
    constant = [c for c, n in grouped.nunique(dropna=False).max().items() if n <= 1]
    varying = sorted(set(others) - set(constant))
    if varying:
        log.info("metadata %s vary within a %s and are left out of its profile", varying, "/".join(keys))
    return grouped.first()[constant].reset_index() if constant else pd.DataFrame(columns=keys)


def _names(rows: pd.DataFrame) -> list[str]:
    return [f"{p}/{w}" for p, w in zip(rows.get(PLATE, ["?"] * len(rows)), rows.get(WELL, ["?"] * len(rows)))][:10]


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"aggregation method must be one of {list(METHODS)}, got {method!r}")
