"""Profiles tables for the profiling metric tests: the real LINCS plate and a tiny synthetic screen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

LINCS = "profiles/lincs_SQ00015054/SQ00015054_normalized_feature_select.csv.gz"


def lincs_plate(test_data: Path) -> tuple[pd.DataFrame, list[str]]:
    """The LINCS plate and its features (every non-``Metadata_`` column), as cytominer-eval's tests use it."""
    df = pd.read_csv(test_data / LINCS)
    return df, [c for c in df.columns if not c.startswith("Metadata_")]


def synthetic_screen(
    n_moa: int = 3,
    compounds_per_moa: int = 2,
    replicates: int = 4,
    n_batches: int = 2,
    controls_per_batch: int = 6,
    channels: tuple[str, ...] = ("DNA", "ER", "RNA"),
    dims: int = 4,
    effect_channels: tuple[str, ...] | None = None,
    effect: float = 3.0,
    noise: float = 0.5,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """Well profiles of a screen: each MoA shifts the ``effect_channels`` blocks along its own direction,
    each compound adds a smaller one, each batch an offset; DMSO wells carry only noise and batch.

    Replicates of a compound are spread evenly over the batches, one plate per batch.
    """
    rng = np.random.default_rng(seed)
    features = [f"{c}_{i:03d}" for c in channels for i in range(dims)]
    active = np.array([f.split("_")[0] in (effect_channels or channels) for f in features])
    moa_dirs = rng.normal(size=(n_moa, len(features))) * active
    batch_shift = rng.normal(scale=0.3, size=(n_batches, len(features)))
    rows, values = [], []
    for m in range(n_moa):
        for c in range(compounds_per_moa):
            compound_dir = moa_dirs[m] + 0.3 * rng.normal(size=len(features)) * active
            for r in range(replicates):
                b = r % n_batches
                rows.append({"Metadata_pert": f"cpd{m}{c}", "Metadata_moa": f"moa{m}", "Metadata_batch": f"b{b}"})
                values.append(effect * compound_dir + batch_shift[b] + noise * rng.normal(size=len(features)))
    for b in range(n_batches):
        for _ in range(controls_per_batch):
            rows.append({"Metadata_pert": "DMSO", "Metadata_moa": None, "Metadata_batch": f"b{b}"})
            values.append(batch_shift[b] + noise * rng.normal(size=len(features)))
    meta = pd.DataFrame(rows)
    meta.insert(0, "Metadata_Plate", "P" + meta["Metadata_batch"].str[1:])
    meta.insert(1, "Metadata_Well", [f"W{i:03d}" for i in range(len(meta))])
    return pd.concat([meta, pd.DataFrame(np.array(values), columns=features)], axis=1), features
