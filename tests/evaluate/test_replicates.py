"""Replicate reproducibility, precision at k and percent replicating: hand-made tables and cytominer-eval's
own reference values on the LINCS plate."""

import numpy as np
import pandas as pd
import pytest

from sslray.evaluate.replicates import (
    group_codes,
    percent_replicating,
    precision_at_k,
    replicate_reproducibility,
    similarity_matrix,
)
from tests.evaluate.profile_fixtures import lincs_plate, synthetic_screen


def table(rows, groups):
    df = pd.DataFrame(rows, columns=["f0", "f1", "f2"])
    df.insert(0, "Metadata_g", groups)
    return df, ["f0", "f1", "f2"]


def test_reproducibility_counts_replicate_pairs_above_the_non_replicate_quantile():
    # replicate pairs: A-A corr 1, B-B corr -1; non-replicate pairs: -1, 1, -1, 1 (median 0, 95% quantile 1)
    df, f = table([[0, 1, 2], [0, 1, 2], [2, 1, 0], [0, 1, 2]], ["A", "A", "B", "B"])
    assert replicate_reproducibility(df, f, ["Metadata_g"], quantiles=(0.5, 0.95)) == {0.5: 0.5, 0.95: 0.0}


def test_groups_compare_as_strings_over_every_column():
    df = pd.DataFrame({"a": ["x", "x", "y"], "dose": [0.1, 0.1, 0.1], "other": [1, 2, 1]})
    assert list(group_codes(df, ["a", "dose"])) == [0, 0, 1]
    assert len(set(group_codes(df, ["a", "other"]))) == 3


def test_spearman_is_pearson_on_ranks():
    x = np.random.default_rng(0).normal(size=(5, 7))
    ranks = np.argsort(np.argsort(x, axis=1), axis=1).astype(float)
    np.testing.assert_allclose(similarity_matrix(x, "spearman"), np.corrcoef(ranks))
    with pytest.raises(ValueError, match="not one of"):
        similarity_matrix(x, "cosine")


def test_precision_at_k_takes_each_groups_most_similar_pairs():
    df, f = table([[0, 1, 2], [0, 1, 2.1], [2, 1, 0], [2, 0.9, 0]], ["A", "A", "B", "B"])
    out = precision_at_k(df, f, ["Metadata_g"], [1, 2, 3]).set_index(["Metadata_g", "k"])
    assert out.loc[("A", 1), "precision"] == 1.0 and out.loc[("A", 2), "precision"] == 1.0
    assert out.loc[("A", 3), "precision"] == pytest.approx(2 / 3)
    assert out.loc[("A", 1), "recall"] == 0.5 and out.loc[("B", 2), "recall"] == 1.0


def test_a_group_of_one_has_no_recall_and_no_pairs_is_an_error():
    df, f = table([[0, 1, 2], [0, 1, 2.1], [2, 1, 0]], ["A", "A", "B"])
    out = precision_at_k(df, f, ["Metadata_g"], 1).set_index("Metadata_g")
    assert np.isnan(out.loc["B", "recall"]) and out.loc["B", "precision"] == 0.0
    with pytest.raises(ValueError, match="no two profiles share"):
        replicate_reproducibility(df.iloc[[0, 2]], f, ["Metadata_g"])
    with pytest.raises(ValueError, match=r"replicate group column\(s\) \['Metadata_dose'\]"):
        replicate_reproducibility(df, f, ["Metadata_dose"])


def test_percent_replicating_finds_the_tight_perturbations_only():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 50))
    wells = [centres[p] + 0.05 * rng.normal(size=50) for p in range(5) for _ in range(2)]
    wells += [rng.normal(size=50), rng.normal(size=50)]  # perturbation 5: two unrelated wells
    df = pd.DataFrame(wells, columns=[f"f{i}" for i in range(50)])
    df.insert(0, "Metadata_pert", [f"p{p}" for p in range(6) for _ in range(2)])
    features = list(df.columns[1:])
    out = percent_replicating(df, features, ["Metadata_pert"], n_samples=500, seed=3)
    assert out["percent_replicating"] == pytest.approx(5 / 6)
    assert out["replicating"].to_dict() == {f"p{p}": p < 5 for p in range(6)}
    assert out["medians"]["p0"] > 0.99 and out["medians"]["p5"] < out["thresholds"][2]
    again = percent_replicating(df, features, ["Metadata_pert"], n_samples=500, seed=3)
    assert again["thresholds"] == out["thresholds"]


def test_percent_replicating_needs_replicates_and_enough_perturbations():
    df, f = synthetic_screen(n_moa=1, compounds_per_moa=2, replicates=3)
    treated = df[df["Metadata_pert"] != "DMSO"]
    with pytest.raises(ValueError, match="only 2 perturbations"):
        percent_replicating(treated, f, ["Metadata_pert"])
    with pytest.raises(ValueError, match="no perturbation in \\['Metadata_Well'\\] has two wells"):
        percent_replicating(treated, f, ["Metadata_Well"])


@pytest.mark.realdata
def test_lincs_reproducibility_and_precision_at_k_match_cytominer_eval(test_data):
    df, features = lincs_plate(test_data)
    rr = replicate_reproducibility(df, features, ["Metadata_broad_sample", "Metadata_mg_per_ml"])
    assert round(rr[0.5], 3) == 0.681 and round(rr[0.95], 3) == 0.458
    pk = precision_at_k(df, features, ["Metadata_broad_sample"], [1, 5, 10, 50])
    counts = pk[pk["precision"] == 1].groupby("k").size().to_dict()
    assert counts == {1: 18, 5: 9, 10: 5, 50: 2}
