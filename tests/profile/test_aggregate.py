"""Tiles -> sites -> wells -> perturbations: the arithmetic, the NaN-aware skipping and the names."""

import logging

import numpy as np
import pandas as pd
import pytest

from sslray.profile.aggregate import (N_SITES, N_TILES, N_WELLS, consensus, feature_names, site_profiles,
                                      usable_features, well_profiles)
from sslray.profile.profiles import PLATE, SITE, WELL


def _tiles() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Plate P: well A01 with sites 1 (3 tiles) and 2 (1 tile); well A02 with one site of 2 tiles."""
    meta = pd.DataFrame({PLATE: ["P"] * 6, WELL: ["A01"] * 4 + ["A02"] * 2, SITE: ["1", "1", "1", "2", "1", "1"],
                         "Metadata_batch": ["b"] * 6, "Metadata_label": ["x", "y", "x", "x", "z", "z"]})
    features = np.array([[1, 10], [2, 20], [6, 60], [4, 40], [0, 0], [2, 2]], dtype=np.float32)
    tissue = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    return meta, features, tissue


def test_feature_names_follow_the_channel_blocks_of_a_channel_agnostic_embedding():
    assert feature_names(4, ["DNA", "Mito"], per_channel=True) == ["DNA_000", "DNA_001", "Mito_000", "Mito_001"]
    assert feature_names(3) == ["emb_000", "emb_001", "emb_002"]
    assert feature_names(3, ["DNA"], per_channel=False)[0] == "emb_000"
    assert feature_names(1001)[-1] == "emb_1000"
    with pytest.raises(ValueError, match="width 5 do not split into 2 channel blocks"):
        feature_names(5, ["DNA", "Mito"], per_channel=True)


def test_sites_are_the_mean_or_median_of_their_tiles():
    meta, features, _ = _tiles()
    sites = site_profiles(meta, features, ["f0", "f1"])
    assert sites[[PLATE, WELL, SITE]].values.tolist() == [["P", "A01", "1"], ["P", "A01", "2"], ["P", "A02", "1"]]
    assert sites["f0"].tolist() == [3.0, 4.0, 1.0] and sites[N_TILES].tolist() == [3, 1, 2]
    assert site_profiles(meta, features, ["f0", "f1"], "median")["f0"].tolist() == [2.0, 4.0, 1.0]
    assert sites["Metadata_batch"].tolist() == ["b"] * 3
    assert "Metadata_label" not in sites  # varies within site 1 of A01: not a property of the site


def test_a_well_is_the_mean_of_its_sites_not_of_its_tiles():
    meta, features, _ = _tiles()
    wells = well_profiles(site_profiles(meta, features, ["f0", "f1"]))
    assert wells[WELL].tolist() == ["A01", "A02"]
    assert wells["f0"].tolist() == [3.5, 1.0]  # (3 + 4) / 2, not (1 + 2 + 6 + 4) / 4
    assert wells[N_SITES].tolist() == [2, 1] and wells[N_TILES].tolist() == [4, 2]
    assert SITE not in wells and wells.columns[-2:].tolist() == ["f0", "f1"]


def test_tiles_below_min_foreground_and_nan_values_are_left_out_not_averaged_in():
    meta, features, tissue = _tiles()
    tissue[2] = 0.01  # the 6/60 tile is background
    features[0, 1] = np.nan  # one value lost: the rest of that tile still counts
    sites = site_profiles(meta, features, ["f0", "f1"], tissue_fraction=tissue, min_foreground=0.1)
    assert sites["f0"].tolist()[0] == 1.5 and sites["f1"].tolist()[0] == 20.0
    assert sites[N_TILES].tolist()[0] == 1  # tiles with every value usable


def test_a_site_with_no_usable_tile_is_dropped_with_a_warning_naming_it(caplog):
    meta, features, tissue = _tiles()
    tissue[4:] = 0.0
    with caplog.at_level(logging.WARNING):
        sites = site_profiles(meta, features, ["f0", "f1"], tissue_fraction=tissue, min_foreground=0.5)
    assert sites[WELL].tolist() == ["A01", "A01"]
    assert "P / A02 / 1" in caplog.text
    assert usable_features(features, tissue, 0.0)[4, 0] == 0.0  # min_foreground 0 keeps every tile


def test_the_perturbation_consensus_keeps_what_its_wells_share():
    wells = pd.DataFrame({PLATE: ["P1", "P2", "P1", "P2"], WELL: ["A01", "A01", "B01", "B01"],
                          "Metadata_perturbation": ["c1", "c1", "DMSO", "DMSO"],
                          "Metadata_moa": ["m", "m", None, None], "f0": [1.0, 3.0, 0.0, 5.0]})
    out = consensus(wells)
    assert out["Metadata_perturbation"].tolist() == ["DMSO", "c1"] and out["f0"].tolist() == [2.5, 2.0]
    assert out[N_WELLS].tolist() == [2, 2] and PLATE not in out
    assert out["Metadata_moa"].tolist()[1] == "m"
    assert consensus(wells, method="mean")["f0"].tolist() == [2.5, 2.0]


def test_the_perturbation_level_without_a_perturbation_column_is_an_error():
    wells = pd.DataFrame({PLATE: ["P1"], WELL: ["A01"], "f0": [1.0]})
    with pytest.raises(ValueError, match="needs a 'Metadata_perturbation' column"):
        consensus(wells)
    with pytest.raises(ValueError, match="must be one of"):
        site_profiles(*_tiles()[:2], ["f0", "f1"], method="max")
