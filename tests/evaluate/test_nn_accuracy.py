"""1-NN accuracy with NSC / NSB / NSCB exclusions on wells placed by hand on the unit circle."""

import numpy as np
import pandas as pd
import pytest

from sslray.evaluate.nn_accuracy import nn_accuracy
from tests.evaluate.profile_fixtures import synthetic_screen


def circle():
    """w0 (a, X, b1) at 0 deg, w1 (a, X, b1) at 10, w2 (b, X, b2) at 26, w3 (c, Y, b2) at 40.

    Nearest: w0 -> w1, w1 -> w0, w2 -> w3 (14 deg), w3 -> w2."""
    angles = np.radians([0, 10, 26, 40])
    df = pd.DataFrame(
        {
            "cpd": ["a", "a", "b", "c"],
            "moa": ["X", "X", "X", "Y"],
            "batch": ["b1", "b1", "b2", "b2"],
            "f0": np.cos(angles),
            "f1": np.sin(angles),
        }
    )
    return df, ["f0", "f1"]


def correct(out):
    return list(out["correct"].to_numpy())


def test_plain_nearest_neighbour():
    df, f = circle()
    out = nn_accuracy(df, f, "moa", "nn", standardize=False)
    assert correct(out) == [True, True, False, False] and out["accuracy"] == 0.5


def test_not_same_compound_skips_the_querys_compound():
    df, f = circle()
    out = nn_accuracy(df, f, "moa", "nsc", compound_column="cpd", standardize=False)
    assert correct(out) == [True, True, False, False]  # w0 and w1 now find w2, of MoA X
    by_cpd = nn_accuracy(df, f, "cpd", "nsc", compound_column="cpd", standardize=False)
    assert by_cpd["accuracy"] == 0.0  # the label itself is excluded: a perturbation label needs NSB, not NSC


def test_not_same_batch_skips_only_same_batch_wells_of_the_same_label():
    df, f = circle()
    by_cpd = nn_accuracy(df, f, "cpd", "nsb", batch_column="batch", standardize=False)
    assert by_cpd["accuracy"] == 0.0  # compound a's replicates share batch b1
    assert nn_accuracy(df, f, "cpd", "nn", standardize=False)["accuracy"] == 0.5
    by_moa = nn_accuracy(df, f, "moa", "nsb", batch_column="batch", standardize=False)
    assert correct(by_moa) == [True, True, False, False]  # w0 -> w2 (X, other batch); w3 keeps w2 (other label)


def test_nscb_applies_both_and_a_query_with_no_candidate_is_not_scored():
    df, f = circle()
    out = nn_accuracy(df, f, "moa", "nscb", compound_column="cpd", batch_column="batch", standardize=False)
    assert correct(out) == [True, True, False, False]
    pair = df.iloc[:2]
    with pytest.raises(ValueError, match="no well has an allowed neighbour under the nsc"):
        nn_accuracy(pair, f, "moa", "nsc", compound_column="cpd", standardize=False)
    # q (a, X, b1) loses r (b, X, b1) to the batch rule and s (a, X, b2) to the compound rule; r and s keep each other
    trio = pd.DataFrame(
        {
            "cpd": ["a", "b", "a"],
            "moa": ["X"] * 3,
            "batch": ["b1", "b1", "b2"],
            "f0": [1.0, 0.9, 0.5],
            "f1": [0.0, 0.4, 0.9],
        }
    )
    out = nn_accuracy(trio, f, "moa", "nscb", compound_column="cpd", batch_column="batch", standardize=False)
    assert out["n_unscored"] == 1 and list(out["correct"].index) == [1, 2] and out["accuracy"] == 1.0


def test_strong_screen_scores_high_and_unlabelled_wells_are_left_out():
    df, f = synthetic_screen(effect=3.0)
    treated = df[df["Metadata_pert"] != "DMSO"]
    nsb = nn_accuracy(treated, f, "Metadata_pert", "nsb", batch_column="Metadata_batch")
    assert nsb["accuracy"] > 0.9 and nsb["n_scored"] == len(treated)
    nsc = nn_accuracy(df, f, "Metadata_moa", "nsc", compound_column="Metadata_pert")
    assert nsc["n_scored"] == len(treated) and nsc["accuracy"] > 0.9  # DMSO has no MoA: not scored


def test_bad_input_is_named():
    df, f = circle()
    with pytest.raises(ValueError, match="not one of"):
        nn_accuracy(df, f, "moa", "nsw")
    with pytest.raises(ValueError, match="nsb accuracy needs batch_column"):
        nn_accuracy(df, f, "moa", "nsb")
    with pytest.raises(ValueError, match=r"column\(s\) \['plate'\]"):
        nn_accuracy(df, f, "moa", "nsb", batch_column="plate")
