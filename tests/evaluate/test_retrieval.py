"""Average precision and mAP: hand-ranked queries, the random-AP null's mean, and copairs 0.5.5 on the same
call (APs and mAPs equal to the last bit, p-values agreeing within their Monte Carlo error)."""

import numpy as np
import pandas as pd
import pytest

from sslray.evaluate.retrieval import (
    average_precision,
    fraction_active,
    map_moa,
    map_replicates,
    mean_average_precision,
    null_average_precision,
)
from tests.evaluate.profile_fixtures import lincs_plate, synthetic_screen


def unit(degrees):
    return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]


def test_ap_of_a_hand_ranked_query():
    # query at 0 deg: positive at 10, negative at 30, positive at 50 -> AP = (1/1 + 2/3) / 2
    meta = pd.DataFrame({"g": ["A", "A", "A", "B"]})
    feats = np.array([unit(0), unit(10), unit(50), unit(30)])
    ap = average_precision(meta, feats, ["g"], [], [], ["g"])
    assert ap.loc[0, "average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert list(ap["n_pos_pairs"]) == [2, 2, 2, 0] and list(ap["n_total_pairs"]) == [3, 3, 3, 3]
    assert np.isnan(ap.loc[3, "average_precision"])


def test_a_tie_between_a_positive_and_a_negative_ranks_the_positive_first():
    meta = pd.DataFrame({"g": ["A", "A", "B"]})
    ap = average_precision(meta, np.array([unit(0), unit(20), unit(-20)]), ["g"], [], [], ["g"])
    assert ap.loc[0, "average_precision"] == 1.0


@pytest.mark.parametrize("n_pos,n_total", [(2, 40), (5, 12), (1, 1)])
def test_the_null_mean_is_the_expected_ap_of_a_random_ranking(n_pos, n_total):
    # E[AP] = (1/L) [(M-1)/(L-1) (L - H_L) + H_L] (copairs.map.normalization.expected_ap)
    harmonic = sum(1 / k for k in range(1, n_total + 1))
    expected = 1.0 if n_total == 1 else ((n_pos - 1) / (n_total - 1) * (n_total - harmonic) + harmonic) / n_total
    null = null_average_precision(n_pos, n_total, 40000, np.random.default_rng(0))
    assert null.mean() == pytest.approx(expected, abs=4 * null.std() / 200 + 1e-12)


def test_strong_perturbations_are_active_and_noise_is_not():
    df, f = synthetic_screen(effect=3.0)
    controls = (df["Metadata_pert"] == "DMSO").to_numpy()
    strong = map_replicates(df, f, "Metadata_pert", controls, null_size=2000)
    assert fraction_active(strong) == 1.0 and (strong["mean_average_precision"] > 0.9).all()
    assert set(strong.columns) >= {"p_value", "corrected_p_value", "below_p", "below_corrected_p", "n_queries"}
    noise, _ = synthetic_screen(effect=0.0, seed=1)
    quiet = map_replicates(noise, f, "Metadata_pert", controls, null_size=2000)
    assert fraction_active(quiet) == 0.0


def test_map_moa_retrieves_compounds_of_the_same_moa():
    df, f = synthetic_screen(compounds_per_moa=3)
    consensus = df[df["Metadata_pert"] != "DMSO"].groupby(["Metadata_pert", "Metadata_moa"], as_index=False)[f].mean()
    out = map_moa(consensus, f, "Metadata_moa", null_size=2000)
    assert sorted(out["Metadata_moa"]) == ["moa0", "moa1", "moa2"]
    assert (out["mean_average_precision"] > 0.9).all()


def test_bad_input_is_named():
    df, f = synthetic_screen()
    with pytest.raises(ValueError, match="none are marked"):
        map_replicates(df, f, "Metadata_pert", np.zeros(len(df), bool))
    with pytest.raises(ValueError, match=r"perturbation column\(s\) \['Metadata_cpd'\]"):
        map_replicates(df, f, "Metadata_cpd", np.ones(len(df), bool))
    with pytest.raises(ValueError, match="column 'Metadata_moa' has missing values"):
        average_precision(df, df[f].to_numpy(), ["Metadata_moa"], [], [], ["Metadata_moa"])


def copairs_pair(meta, feats, args, sameby, null_size, cache_dir):
    """copairs' AP and mAP tables on the same call as ours, ours second."""
    copairs_map = pytest.importorskip("copairs.map")
    theirs = copairs_map.average_precision(meta, feats, *args, progress_bar=False)
    ours = average_precision(meta, feats, *args)
    map_theirs = copairs_map.mean_average_precision(
        theirs, sameby, null_size=null_size, threshold=0.05, seed=0, progress_bar=False, cache_dir=cache_dir
    )
    map_ours = mean_average_precision(ours, sameby, null_size=null_size, threshold=0.05, seed=0)
    return theirs, ours, map_theirs.merge(map_ours, on=sameby, suffixes=("_copairs", ""))


def assert_same_as_copairs(theirs, ours, maps, null_size):
    np.testing.assert_array_equal(ours["n_pos_pairs"], theirs["n_pos_pairs"])
    np.testing.assert_array_equal(ours["n_total_pairs"], theirs["n_total_pairs"])
    np.testing.assert_array_equal(ours["average_precision"].to_numpy(), theirs["average_precision"].to_numpy())
    np.testing.assert_array_equal(maps["mean_average_precision"], maps["mean_average_precision_copairs"])
    p = maps["p_value_copairs"].to_numpy()
    tolerance = 5 * np.sqrt(2 * p * (1 - p) / null_size) + 3 / null_size  # two Monte Carlo estimates of one p
    assert (np.abs(maps["p_value"] - p) <= tolerance).all()
    clear = np.abs(maps["corrected_p_value_copairs"] - 0.05) > 0.02
    assert (maps["below_corrected_p"][clear] == maps["below_corrected_p_copairs"][clear]).all()


def test_same_moa_retrieval_equals_copairs_on_a_synthetic_table(tmp_path):
    df, f = synthetic_screen(effect=0.8, noise=1.0, compounds_per_moa=3)
    treated = df[df["Metadata_pert"] != "DMSO"].reset_index(drop=True)
    args = (["Metadata_moa"], ["Metadata_pert"], [], ["Metadata_moa"])
    theirs, ours, maps = copairs_pair(
        treated[["Metadata_moa", "Metadata_pert"]], treated[f].to_numpy(), args, ["Metadata_moa"], 20000, tmp_path
    )
    assert_same_as_copairs(theirs, ours, maps, 20000)


@pytest.mark.realdata
def test_lincs_replicate_retrieval_equals_copairs(test_data, tmp_path):
    df, features = lincs_plate(test_data)
    controls = (df["Metadata_broad_sample"] == "DMSO").to_numpy()
    meta = df[["Metadata_broad_sample"]].assign(ref=np.where(controls, np.arange(len(df)), -1))
    both = ["Metadata_broad_sample", "ref"]
    theirs, ours, maps = copairs_pair(
        meta, df[features].to_numpy(), (both, [], [], both), ["Metadata_broad_sample"], 20000, tmp_path
    )
    assert len(maps) == 58
    assert_same_as_copairs(theirs, ours, maps, 20000)
    ours_direct = map_replicates(df, features, "Metadata_broad_sample", controls, null_size=20000)
    np.testing.assert_array_equal(ours_direct["mean_average_precision"], maps["mean_average_precision"])
    # replicate retrieval by broad_sample alone (every compound has its doses as "replicates")
    plain = (["Metadata_broad_sample"], [], [], ["Metadata_broad_sample"])
    theirs, ours, maps = copairs_pair(
        df[["Metadata_broad_sample"]], df[features].to_numpy(), plain, ["Metadata_broad_sample"], 4000, tmp_path
    )
    assert_same_as_copairs(theirs, ours, maps, 4000)
