"""Survival evaluation: the c-index, Kaplan-Meier risk groups, the log-rank test and the plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sslray.evaluate import survival
from sslray.evaluate.survival import concordance, plot_risk_groups, risk_groups


def cohort(n: int = 60, seed: int = 0):
    """Times that shorten with the risk, about a third censored: a model with real signal."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    return np.round(rng.exponential(np.exp(-risk)) * 10) + 1, rng.random(n) < 0.7, risk


def test_the_cox_api_is_re_exported():
    from sslray.evaluate import cox

    assert (survival.cox_loss, survival.fit_linear_cox, survival.check_survival_data) == (
        cox.cox_loss, cox.fit_linear_cox, cox.check_survival_data)


def test_concordance_counts_higher_risk_as_shorter_time():
    assert concordance([1, 2, 3], [3.0, 2.0, 1.0], [1, 1, 1]) == 1.0
    assert concordance([1, 2, 3], [1.0, 2.0, 3.0], [1, 1, 1]) == 0.0
    assert concordance([1, 2, 3], [1.0, 1.0, 1.0], [1, 1, 1]) == 0.5


def test_concordance_equals_lifelines_on_the_negated_risk():
    from lifelines.utils import concordance_index

    time, event, risk = cohort()
    assert concordance(time, risk, event) == concordance_index(time, -risk, event)
    assert concordance(time, risk, event) > 0.6


@pytest.mark.parametrize(("event", "message"), [([0, 0, 0], "no events"), ([0, 0, 1], "no comparable pairs")])
def test_concordance_without_comparable_pairs_is_a_value_error(event, message):
    with pytest.raises(ValueError, match=message):
        concordance([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], event)


def test_concordance_rejects_nan_risk():
    with pytest.raises(ValueError, match="risk holds 1 NaN"):
        concordance([1.0, 2.0], [0.1, np.nan], [1, 1])


def test_risk_groups_split_at_the_median_and_match_lifelines():
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    time, event, risk = cohort()
    groups = risk_groups(time, event, risk)
    high = risk > np.median(risk)
    assert groups.threshold == np.median(risk)
    assert (groups.high.n, groups.low.n) == (high.sum(), (~high).sum())
    assert groups.high.events == event[high].sum()
    expected = logrank_test(time[high], time[~high], event_observed_A=event[high], event_observed_B=event[~high])
    assert groups.p_value == expected.p_value
    assert groups.statistic == expected.test_statistic
    assert groups.p_value < 0.05  # the cohort's risk carries signal
    curve = KaplanMeierFitter().fit(time[high], event[high]).survival_function_
    np.testing.assert_array_equal(groups.high.timeline, curve.index.to_numpy())
    np.testing.assert_array_equal(groups.high.survival, curve.iloc[:, 0].to_numpy())
    at = np.median(time)  # the high-risk curve lies below the low-risk one
    assert survival_at(groups.high, at) < survival_at(groups.low, at)


def survival_at(curve, t: float) -> float:
    return curve.survival[np.searchsorted(curve.timeline, t, side="right") - 1]


def test_risk_groups_need_two_groups():
    with pytest.raises(ValueError, match="cannot split"):
        risk_groups([1.0, 2.0, 3.0], [1, 1, 1], [0.0, 1.0, 1.0])


@pytest.mark.realdata
def test_risk_groups_of_a_rossi_cox_model(test_data):
    from sslray.evaluate.cox import fit_linear_cox

    path = test_data / "survival" / "rossi.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    df = pd.read_csv(path)
    x = df.drop(columns=["week", "arrest"]).to_numpy(np.float64)
    groups = risk_groups(df["week"], df["arrest"], fit_linear_cox(x, df["week"], df["arrest"]).predict_risk(x))
    assert groups.low.n + groups.high.n == len(df)
    assert groups.p_value < 0.01


def test_plot_writes_a_png(tmp_path):
    time, event, risk = cohort()
    path = tmp_path / "km.png"
    plot_risk_groups(risk_groups(time, event, risk), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
