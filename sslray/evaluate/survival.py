"""Survival evaluation: Harrell's c-index, Kaplan-Meier risk groups and the log-rank test.

Protocol in docs/protocols.md ("Survival"): the c-index is lifelines' ``concordance_index`` on the
negated risk (a higher risk means a shorter time), and risk groups are compared by Kaplan-Meier
curves and a log-rank test. The Cox loss, the linear Cox fit and the input checks live in
``sslray.evaluate.cox`` and are re-exported here.

lifelines and matplotlib are imported inside the functions that use them: ``load_protocols``
imports every module of this package, and neither is needed to load a protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslray.evaluate.cox import LinearCox, check_features, check_survival_data, check_values, cox_loss, fit_linear_cox

# The Cox maths is in sslray.evaluate.cox; it is re-exported so survival code has one module to import.
__all__ = ["LinearCox", "RiskGroups", "SurvivalCurve", "check_features", "check_survival_data", "check_values",
           "concordance", "cox_loss", "fit_linear_cox", "plot_risk_groups", "risk_groups"]


def concordance(time, risk, event) -> float:
    """Harrell's c-index of ``risk`` (higher = shorter survival), as lifelines computes it.

    ``concordance_index`` ranks by predicted *time*, hence the negated risk (docs/protocols.md,
    "Survival"). Ties in risk count one half. Undefined without a comparable pair (a pair whose
    shorter time is an observed event), which is a ValueError rather than lifelines' ZeroDivisionError.
    """
    times, events = check_survival_data(time, event)
    risks = check_values(risk, "risk", len(times))
    if not events.any():
        raise ValueError("no events: every sample is censored, so the c-index has no comparable pair")
    from lifelines.utils import concordance_index

    try:
        return float(concordance_index(times, -risks, events))
    except ZeroDivisionError:
        raise ValueError("no comparable pairs: no event time is shorter than another sample's time") from None


@dataclass(frozen=True)
class SurvivalCurve:
    """One group's Kaplan-Meier estimate: survival probability from ``timeline[i]`` on (a step function)."""

    timeline: np.ndarray
    survival: np.ndarray
    n: int
    events: int


@dataclass(frozen=True)
class RiskGroups:
    """Low/high predicted-risk halves (split at ``threshold``, the median risk) and their log-rank test."""

    low: SurvivalCurve
    high: SurvivalCurve
    threshold: float
    p_value: float
    statistic: float


def risk_groups(time, event, risk) -> RiskGroups:
    """Split at the median predicted risk (high: risk > median) and compare the halves.

    The median split is the usual presentation of a risk model in pathology papers: a model that
    separates patients shows two diverging Kaplan-Meier curves and a small log-rank p-value.
    """
    times, events = check_survival_data(time, event)
    risks = check_values(risk, "risk", len(times))
    threshold = float(np.median(risks))
    high = risks > threshold
    if high.all() or not high.any():
        raise ValueError(f"cannot split at the median risk {threshold:g}: more than half the risks equal it")
    from lifelines.statistics import logrank_test

    test = logrank_test(times[high], times[~high], event_observed_A=events[high], event_observed_B=events[~high])
    return RiskGroups(low=_kaplan_meier(times[~high], events[~high]), high=_kaplan_meier(times[high], events[high]),
                      threshold=threshold, p_value=float(test.p_value), statistic=float(test.test_statistic))


def _kaplan_meier(times: np.ndarray, events: np.ndarray) -> SurvivalCurve:
    from lifelines import KaplanMeierFitter

    curve = KaplanMeierFitter().fit(times, events).survival_function_
    return SurvivalCurve(timeline=curve.index.to_numpy(dtype=np.float64), survival=curve.iloc[:, 0].to_numpy(),
                         n=len(times), events=int(events.sum()))


def plot_risk_groups(groups: RiskGroups, path: str | Path) -> None:
    """Write the two Kaplan-Meier step curves, labelled with n and the log-rank p-value, to ``path``.

    Draws on an Agg canvas of its own instead of switching pyplot's global backend, so a caller's
    interactive matplotlib session is left as it was.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for name, curve in (("low risk", groups.low), ("high risk", groups.high)):
        axes.step(curve.timeline, curve.survival, where="post", label=f"{name} (n={curve.n}, {curve.events} events)")
    axes.set(xlabel="time", ylabel="survival probability", ylim=(0, 1.05))
    axes.legend(title=f"log-rank p = {groups.p_value:.3g}", loc="lower left")
    figure.tight_layout()
    figure.savefig(path, format="png")
