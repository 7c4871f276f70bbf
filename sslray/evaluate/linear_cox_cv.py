"""The survival baseline: a linear Cox model on mean-pooled bag features, in the same folds.

Each bag becomes the mean of its tiles; the L2 penalty is chosen per outer fold by the mean
inner c-index, the model refit on the outer training part and its risks on the outer test bags
returned in the shape the MIL heads report (docs/protocols.md, "Survival"). No Ray import.
"""

from __future__ import annotations

import logging

import numpy as np

from sslray.evaluate.bags import Bags
from sslray.evaluate.folds import Fold
from sslray.evaluate.mil_results import HeadResult, OuterFold

log = logging.getLogger(__name__)


def mean_pooled(bags: Bags) -> np.ndarray:
    """(n_bags, dim) float64: each bag's mean tile embedding."""
    sums = np.add.reduceat(bags.features.astype(np.float64), bags.offsets[:-1], axis=0)
    return sums / bags.sizes[:, None]


def linear_cox_cv(bags: Bags, folds: list[Fold], penalizers: list[float], ties: str = "efron") -> HeadResult:
    from sslray.evaluate.cox import fit_linear_cox
    from sslray.evaluate.survival import concordance

    x = mean_pooled(bags)
    time, event = bags.time, bags.event

    def fit(rows: np.ndarray, penalizer: float):
        return fit_linear_cox(x[rows], time[rows], event[rows], penalizer=penalizer, ties=ties)

    def inner_score(fold: Fold, penalizer: float) -> float:
        scores = []
        for train, val in fold.inner:
            try:
                scores.append(concordance(time[val], fit(train, penalizer).predict_risk(x[val]), event[val]))
            except (ValueError, np.linalg.LinAlgError) as err:  # no comparable pair, or no fit at this penalty
                log.info("linear Cox, penalizer %s: an inner fold scores nothing (%s)", penalizer, err)
        return float(np.mean(scores)) if scores else float("nan")

    result = HeadResult()
    for k, fold in enumerate(folds):
        scored = [(inner_score(fold, p), p) for p in penalizers]
        finite = [s for s in scored if np.isfinite(s[0])]
        if not finite:
            raise ValueError(f"linear Cox: no penalizer in {penalizers} fits the inner folds of outer fold {k}")
        best_score, best = max(finite, key=lambda s: (s[0], s[1]))  # ties: the stronger penalty
        risk = fit(fold.train, best).predict_risk(x[fold.test])
        result.folds.append(OuterFold(k, {"penalizer": best}, 0, best_score, fold.test, risk.reshape(-1, 1)))
    return result
