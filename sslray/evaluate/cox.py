"""Cox proportional hazards: the partial-likelihood loss that trains survival MIL heads, a linear Cox fit,
and the survival input checks every survival function shares.

Survival protocol in docs/protocols.md ("Survival"). With distinct times t_j, d_j events D_j at
t_j, risk set R_j = {i: time_i >= t_j} and r_i = exp(risk_i), the partial log-likelihood is

    sum_j [ sum_{i in D_j} risk_i - sum_{l=0}^{d_j-1} log( sum_{R_j} r - (l / d_j) sum_{D_j} r ) ]

(Efron's tie correction; Breslow's approximation drops the ``l / d_j`` term). Both are written here
as one sum over *event terms* k (one per event) with a fraction c_k (l / d_j, or 0), which makes
Breslow and Efron, the loss and the Newton fit, the same few vectorised lines.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

TIES = ("efron", "breslow")


def check_survival_data(time, event, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(time as float64, event as bool)``, or a ValueError naming what is wrong.

    Checked once here so that every survival function fails on the input itself, not later with
    a NaN loss or an opaque lifelines error. ``n`` is the length the risks/features have.
    """
    times = np.asarray(time, dtype=np.float64)
    events = np.asarray(event)
    if times.ndim != 1 or events.ndim != 1:
        raise ValueError(f"time and event must be 1-D, got shapes {times.shape} and {events.shape}")
    if len(times) != len(events) or (n is not None and len(times) != n):
        expected = "" if n is None else f" (risk/features: {n})"
        raise ValueError(f"mismatched lengths: time has {len(times)}, event has {len(events)}{expected}")
    if len(times) == 0:
        raise ValueError("no samples: time and event are empty")
    if not np.isfinite(times).all():
        raise ValueError(f"time holds {int((~np.isfinite(times)).sum())} NaN or infinite value(s)")
    if (times < 0).any():
        raise ValueError(f"time holds {int((times < 0).sum())} negative value(s); survival times are >= 0")
    if events.dtype.kind not in "biuf":
        raise ValueError(f"event must be 0/1 or bool (1 = event observed, 0 = censored), got dtype {events.dtype}")
    bad = ~np.isin(events, [0, 1])
    if bad.any():
        raise ValueError(f"event must be 0/1 (1 = event observed, 0 = censored), got {np.unique(events[bad])[:3]}")
    return times, events.astype(bool)


def check_values(values, name: str, n: int) -> np.ndarray:
    """A finite float64 1-D array of length ``n`` (risks), or a ValueError naming ``name``."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like time, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    return array


def check_features(x, d: int | None = None) -> np.ndarray:
    """A finite float64 (n, d) matrix, or a ValueError saying which rows hold NaN/inf."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or (d is not None and array.shape[1] != d):
        raise ValueError(f"features must be a 2-D (n, {d or 'd'}) array, got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise ValueError(f"features hold NaN or infinite values in {bad.size} row(s), e.g. rows {bad[:5].tolist()}")
    return array


@dataclass(frozen=True)
class _Terms:
    """Where samples and event terms sit among the distinct times (ascending); depends on time/event only."""

    group: np.ndarray  # (n,) the distinct time of each sample
    n_groups: int
    term_group: np.ndarray  # (E,) the distinct time of each event term
    fraction: np.ndarray  # (E,) c_k: Efron's l / d_j, or 0 for Breslow


def _terms(times: np.ndarray, events: np.ndarray, ties: str) -> _Terms:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    _, group = np.unique(times, return_inverse=True)
    n_groups = int(group.max()) + 1
    term_group = np.sort(group[events])
    counts = np.bincount(term_group, minlength=n_groups)
    rank = np.arange(term_group.size) - (np.cumsum(counts) - counts)[term_group]
    fraction = rank / counts[term_group] if ties == "efron" else np.zeros(term_group.size)
    return _Terms(group.reshape(-1), n_groups, term_group, fraction)


def cox_loss(risk: Tensor, time: Tensor, event: Tensor, ties: str = "efron") -> Tensor:
    """The negative Cox partial log-likelihood of ``risk`` (log hazard ratios), divided by the number of events.

    Cox (1972) partial likelihood; ties by Efron (1977) or Breslow (1974). Dividing by the events,
    not the batch size, keeps the loss scale (and so the learning rate) independent of how censored
    a batch is. Sums over risk sets are log-sum-exps (``logcumsumexp`` over times), so large risks
    neither overflow nor lose precision, and no Python loop runs over samples or times.

    A batch without events returns 0 (connected to ``risk``, so ``backward`` works): a partial
    likelihood ranks events against those still at risk, and a mini-batch of censored bags holds
    no such ranking, hence no information and no gradient.
    """
    if risk.ndim != 1:
        raise ValueError(f"risk must be 1-D (n,), got shape {tuple(risk.shape)}; squeeze a (n, 1) head output")
    times, events = check_survival_data(_host(time), _host(event), len(risk))
    if not events.any():
        return (risk * 0.0).sum()
    terms = _terms(times, events, ties)
    device = risk.device
    group = torch.as_tensor(terms.group, device=device)
    term_group = torch.as_tensor(terms.term_group, device=device)
    observed = torch.as_tensor(events, device=device)
    per_time = _group_logsumexp(risk, group, terms.n_groups)
    log_at_risk = torch.logcumsumexp(per_time.flip(0), 0).flip(0)[term_group]
    log_denominator = log_at_risk
    if terms.fraction.any():
        log_tied = _group_logsumexp(risk[observed], group[observed], terms.n_groups)[term_group]
        fraction = torch.as_tensor(terms.fraction, dtype=risk.dtype, device=device)
        log_denominator = log_at_risk + torch.log1p(-fraction * torch.exp(log_tied - log_at_risk))
    return (log_denominator.sum() - risk[observed].sum()) / len(terms.term_group)


def _host(values) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)


def _group_logsumexp(values: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """log(sum(exp(values))) per group, each shifted by its own (detached) maximum so none underflows.

    Groups with no member get a finite, unused value (log of the smallest float) and no gradient.
    """
    peak = values.new_zeros(n_groups).scatter_reduce(0, group, values.detach(), "amax", include_self=False)
    summed = values.new_zeros(n_groups).index_add(0, group, torch.exp(values - peak[group]))
    return torch.log(summed.clamp_min(torch.finfo(values.dtype).tiny)) + peak


def _log_likelihood_terms(z: np.ndarray, events: np.ndarray, terms: _Terms, beta: np.ndarray):
    """(log-likelihood, gradient, negative Hessian) of the partial likelihood at ``beta``, in O(n d^2).

    With e_i = exp(eta_i), event term k of time j has D_k = S0_j - c_k T0_j and mean
    m_k = (S1_j - c_k T1_j) / D_k (S: sums over the risk set, T: over the tied events). The negative
    Hessian sum_k [(S2_j - c_k T2_j) / D_k - m_k m_k^T] never forms the (n, d, d) S2: each sample
    carries the weight e_i * (sum of 1/D_k over the terms whose risk set holds it, minus its own tie's c_k/D_k).
    """
    eta = z @ beta
    shift = eta.max()  # every ratio below is invariant to it; only log D needs it back
    e = np.exp(eta - shift)
    ez, e_events = e[:, None] * z, np.where(events, e, 0.0)
    s0 = _reverse_cumsum(np.bincount(terms.group, e, terms.n_groups))[terms.term_group]
    s1 = _reverse_cumsum(_group_rows(ez, terms.group, terms.n_groups))[terms.term_group]
    t0 = np.bincount(terms.group, e_events, terms.n_groups)[terms.term_group]
    t1 = _group_rows(ez * events[:, None], terms.group, terms.n_groups)[terms.term_group]
    c = terms.fraction
    denominator = s0 - c * t0
    means = (s1 - c[:, None] * t1) / denominator[:, None]
    log_likelihood = eta[events].sum() - (np.log(denominator) + shift).sum()
    gradient = z[events].sum(0) - means.sum(0)
    at_risk = np.cumsum(np.bincount(terms.term_group, 1.0 / denominator, terms.n_groups))
    tied = np.bincount(terms.term_group, c / denominator, terms.n_groups)
    weight = e * at_risk[terms.group] - e_events * tied[terms.group]
    return float(log_likelihood), gradient, (z * weight[:, None]).T @ z - means.T @ means


def _reverse_cumsum(values: np.ndarray) -> np.ndarray:
    return np.cumsum(values[::-1], axis=0)[::-1]


def _group_rows(rows: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    out = np.zeros((n_groups, rows.shape[1]))
    np.add.at(out, group, rows)
    return out


@dataclass(frozen=True)
class LinearCox:
    """A fitted linear Cox model; ``coef`` in the original feature units (log hazard ratio per unit).

    ``log_likelihood`` is the unpenalised partial log-likelihood at the fit (lifelines reports the
    penalised one when its penalizer is set).
    """

    coef: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    log_likelihood: float
    n_iter: int

    def predict_risk(self, x) -> np.ndarray:
        """Log partial hazard relative to the training mean: higher means shorter expected survival."""
        return (check_features(x, len(self.coef)) - self.mean) @ self.coef


def fit_linear_cox(x: np.ndarray, time, event, penalizer: float = 0.0, ties: str = "efron",
                   max_iter: int = 50, tol: float = 1e-9) -> LinearCox:
    """Maximum (penalised) partial likelihood by Newton-Raphson with step halving, as lifelines' CoxPHFitter.

    Like lifelines, columns are centred and scaled (sample standard deviation) before fitting, and
    ``penalizer`` adds ``0.5 * penalizer * n * ||beta||^2`` on the standardised coefficients to the
    negative log-likelihood (0.5 * penalizer * ||beta||^2 per sample), so the same ``penalizer``
    gives the same model. Constant columns are fine only with a penalizer (their coefficient is 0).
    Stops when the Newton decrement or the relative change of the objective falls below ``tol``.
    """
    features = check_features(x)
    times, events = check_survival_data(time, event, len(features))
    if not events.any():
        raise ValueError("no events: every sample is censored, so the Cox model is not identifiable")
    if penalizer < 0:
        raise ValueError(f"penalizer must be >= 0, got {penalizer}")
    mean = features.mean(0)
    scale = features.std(0, ddof=1) if len(features) > 1 else np.zeros(features.shape[1])
    constant = ~(scale > 0)
    if constant.any() and penalizer == 0:
        raise ValueError(f"constant feature column(s) {np.flatnonzero(constant)[:5].tolist()}: "
                         "their coefficient is not identifiable; drop them or set penalizer > 0")
    scale = np.where(constant, 1.0, scale)
    z, terms = (features - mean) / scale, _terms(times, events, ties)
    ridge = penalizer * len(z)

    def objective(beta: np.ndarray):
        log_likelihood, gradient, hessian = _log_likelihood_terms(z, events, terms, beta)
        penalised = log_likelihood - 0.5 * ridge * beta @ beta
        return penalised, gradient - ridge * beta, hessian + ridge * np.eye(len(beta)), log_likelihood

    beta, n_iter = _newton(objective, z.shape[1], max_iter, tol)
    return LinearCox(coef=beta / scale, mean=mean, scale=scale, log_likelihood=objective(beta)[3], n_iter=n_iter)


def _newton(objective, d: int, max_iter: int, tol: float) -> tuple[np.ndarray, int]:
    """Maximise a concave ``objective`` from 0; halve a step until it does not lower the objective."""
    beta = np.zeros(d)
    value, gradient, hessian, _ = objective(beta)
    for iteration in range(1, max_iter + 1):
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            raise ValueError("singular Hessian: the features are collinear; drop some or set penalizer > 0") from None
        if gradient @ step / 2 < tol:
            return beta, iteration
        for _ in range(30):
            candidate = beta + step
            new_value, new_gradient, new_hessian, _ = objective(candidate)
            if new_value >= value:
                break
            step = step / 2
        else:
            return beta, iteration  # no step improves: at the optimum up to rounding
        change = abs(new_value - value) / max(abs(value), 1e-300)
        beta, value, gradient, hessian = candidate, new_value, new_gradient, new_hessian
        if change < tol:
            return beta, iteration
    warnings.warn(f"fit_linear_cox: Newton-Raphson did not converge in {max_iter} iterations; "
                  "the data may be separable (set penalizer > 0)", RuntimeWarning, stacklevel=3)
    return beta, max_iter
