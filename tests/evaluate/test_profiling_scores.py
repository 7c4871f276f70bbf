"""Which metrics a profiles table's design allows (and why not), and every metric of one normalised table."""

import numpy as np
import pytest

from sslray.evaluate.profiling_scores import METRICS, ProfilingDesign, consensus, plan, score_table
from tests.evaluate.profile_fixtures import synthetic_screen


def screen(**kwargs):
    df, f = synthetic_screen(**kwargs)
    df["Metadata_control"] = df["Metadata_pert"] == "DMSO"
    return df, f


DESIGN = ProfilingDesign(perturbation_column="Metadata_pert", null_size=500, replicating_null=200)


def test_a_full_design_allows_every_metric():
    df, _ = screen()
    p = plan(df, DESIGN)
    assert p.allowed == METRICS and p.skipped == {}
    assert (p.batch_column, p.moa_column, p.plate_column) == ("Metadata_batch", "Metadata_moa", "Metadata_Plate")


def test_missing_batch_and_moa_columns_skip_their_metrics_with_the_reason():
    df, _ = screen()
    p = plan(df.drop(columns=["Metadata_batch", "Metadata_moa"]), DESIGN)
    assert set(p.skipped) == {"nsb_accuracy", "nscb_accuracy", "map_moa", "nsc_accuracy"}
    assert p.skipped["nsb_accuracy"] == "the table has no batch_column column 'Metadata_batch'"
    assert "moa_column" in p.skipped["map_moa"] and p.batch_column is None and p.moa_column is None
    unset = plan(df, ProfilingDesign(perturbation_column="Metadata_pert", batch_column=None))
    assert unset.skipped["nsb_accuracy"] == "batch_column is not set"


def test_one_batch_one_compound_per_moa_and_no_replicates_are_skipped():
    df, _ = screen(n_batches=1, compounds_per_moa=1)
    p = plan(df, DESIGN)
    assert p.skipped["nsb_accuracy"].startswith("one batch (Metadata_batch = 'b0')")
    assert "no MoA in Metadata_moa has two perturbations" in p.skipped["map_moa"]
    single, _ = screen(replicates=1)
    q = plan(single, DESIGN)
    assert {"percent_replicating", "map_replicates", "fraction_active"} <= set(q.skipped)
    assert "no treated perturbation has two wells" in q.skipped["map_replicates"]
    assert "replicate_reproducibility" not in q.skipped  # the DMSO wells replicate each other


@pytest.mark.parametrize(
    "change, message",
    [
        ({"perturbation_column": "Metadata_cpd"}, r"perturbation column\(s\) \['Metadata_cpd'\]"),
        ({"replicate_groups": ["Metadata_pert", "Metadata_dose"]}, r"replicate group column\(s\) \['Metadata_dose'\]"),
        ({"control": "Metadata_pert == 'PBS'"}, "control query \"Metadata_pert == 'PBS'\" selects no profile"),
        ({"control": "Metadata_Plate != 'none'"}, "selects every profile"),
    ],
)
def test_bad_input_names_the_column_or_query(change, message):
    df, _ = screen()
    with pytest.raises(ValueError, match=message):
        plan(df, ProfilingDesign(**{"perturbation_column": "Metadata_pert", **change}))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="quantiles"):
        ProfilingDesign(quantiles=[1.5])
    with pytest.raises(ValueError, match="precision_ks"):
        ProfilingDesign(precision_ks=[0])


def test_every_allowed_metric_is_scored_with_its_per_unit_spread():
    df, f = screen()
    out = score_table(df, DESIGN, plan(df, DESIGN))
    metrics, summaries = out["metrics"], out["summaries"]
    assert set(METRICS) <= set(metrics)
    assert metrics["map_replicates"] > 0.9 and metrics["fraction_active"] == 1.0 and metrics["nsb_accuracy"] > 0.8
    assert set(metrics["replicate_reproducibility"]) == {"0.5", "0.95"} and set(metrics["precision_at_k"]) == {
        "1",
        "5",
        "10",
        "50",
    }
    assert summaries["map_replicates"]["unit"] == "perturbation" and len(summaries["map_replicates"]["folds"]) == 6
    assert summaries["map_replicates"]["mean"] == pytest.approx(np.mean(summaries["map_replicates"]["folds"]))
    assert summaries["map_moa"]["unit"] == "MoA" and len(summaries["map_moa"]["folds"]) == 3
    assert summaries["nsb_accuracy"]["unit"] == "plate" and len(summaries["nsb_accuracy"]["folds"]) == 2
    assert summaries["nsb_accuracy"]["mean"] == metrics["nsb_accuracy"]
    assert len(out["replicate_maps"]) == 6 and {"perturbation", "p_value"} <= set(out["replicate_maps"][0])


def test_skipped_metrics_are_not_scored_and_the_consensus_follows_the_aggregation():
    df, f = screen()
    p = plan(df.drop(columns=["Metadata_moa"]), DESIGN)
    out = score_table(df.drop(columns=["Metadata_moa"]), DESIGN, p)
    assert not {"map_moa", "nsc_accuracy", "nscb_accuracy"} & set(out["metrics"])
    treated = df[~df["Metadata_control"]]
    mean = consensus(treated, f, DESIGN, "Metadata_moa", "mean").set_index("Metadata_pert")
    median = consensus(treated, f, DESIGN, "Metadata_moa", "median").set_index("Metadata_pert")
    wells = treated[treated["Metadata_pert"] == "cpd00"][f]
    np.testing.assert_allclose(mean.loc["cpd00", f].to_numpy(float), wells.mean().to_numpy())
    np.testing.assert_allclose(median.loc["cpd00", f].to_numpy(float), wells.median().to_numpy())
