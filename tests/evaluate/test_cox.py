"""Survival input checks, Cox loss and linear Cox fit: against brute-force sums, autograd, lifelines and the published rossi figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from sslray.evaluate.cox import (
    _log_likelihood_terms,
    _terms,
    check_features,
    check_survival_data,
    cox_loss,
    fit_linear_cox,
)
from sslray.evaluate.survival import concordance

# lifelines 0.30.3 CoxPHFitter().fit(rossi, "week", "arrest"), as listed in the shared data README.
ROSSI_COEF = {"fin": -0.37942, "age": -0.05744, "race": 0.31390, "wexp": -0.14980, "mar": -0.43370,
              "paro": -0.08487, "prio": 0.09150}


@pytest.fixture(scope="module")
def rossi(test_data) -> pd.DataFrame:
    path = test_data / "survival" / "rossi.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return pd.read_csv(path)


def covariates(df: pd.DataFrame) -> np.ndarray:
    return df[list(ROSSI_COEF)].to_numpy(np.float64)


def tied_data(n: int = 40, seed: int = 0):
    """Integer times (many ties, some tied events and censorings at the same time), float64 risks."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=n), rng.integers(1, 8, size=n).astype(float), rng.random(n) < 0.6


def brute_force_log_likelihood(risk, time, event, ties: str) -> float:
    """The partial log-likelihood written as in Cox/Breslow/Efron, one distinct event time at a time."""
    total = 0.0
    for t in np.unique(time[event]):
        dead = (time == t) & event
        at_risk = np.exp(risk[time >= t]).sum()
        tied = np.exp(risk[dead]).sum()
        d = int(dead.sum())
        total += risk[dead].sum()
        for l in range(d):
            total -= math.log(at_risk - (l / d * tied if ties == "efron" else 0.0))
    return total


def test_check_survival_data_returns_float_times_and_bool_events():
    times, events = check_survival_data([1, 2, 0], np.array([1.0, 0.0, 1.0]), n=3)
    assert times.dtype == np.float64 and events.dtype == bool
    assert events.tolist() == [True, False, True]


@pytest.mark.parametrize(("time", "event", "message"), [
    ([1.0, -2.0], [1, 0], "negative"),
    ([1.0, np.nan], [1, 0], "NaN"),
    ([1.0, np.inf], [1, 0], "infinite"),
    ([1.0, 2.0], [1, 2], "event must be 0/1"),
    ([1.0, 2.0], [1, np.nan], "event must be 0/1"),
    ([1.0, 2.0], ["yes", "no"], "dtype"),
    ([1.0, 2.0, 3.0], [1, 0], "mismatched lengths"),
    ([[1.0, 2.0]], [1, 0], "1-D"),
    ([], [], "no samples"),
])
def test_bad_survival_data_is_a_value_error_naming_the_problem(time, event, message):
    with pytest.raises(ValueError, match=message):
        check_survival_data(time, event)


def test_lengths_must_match_the_risks():
    with pytest.raises(ValueError, match="risk/features: 3"):
        check_survival_data([1.0, 2.0], [1, 0], n=3)


def test_check_features_names_the_rows_with_nan():
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        check_features(np.array([[0.0], [1.0], [np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        check_features(np.zeros(3))


def loss(risk, time, event, ties="efron") -> torch.Tensor:
    return cox_loss(torch.as_tensor(risk), torch.as_tensor(time), torch.as_tensor(event), ties)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_loss_is_the_partial_likelihood_per_event_with_ties(ties):
    risk, time, event = tied_data()
    expected = -brute_force_log_likelihood(risk, time, event, ties) / event.sum()
    assert loss(risk, time, event, ties).item() == pytest.approx(expected, rel=1e-12)


def test_efron_and_breslow_differ_only_with_tied_events():
    risk, time, event = tied_data()
    assert loss(risk, time, event, "efron").item() != pytest.approx(loss(risk, time, event, "breslow").item())
    distinct = np.arange(len(time), dtype=float)
    assert loss(risk, distinct, event, "efron").item() == pytest.approx(
        loss(risk, distinct, event, "breslow").item(), rel=1e-14)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_loss_gradient_is_correct(ties):
    risk, time, event = tied_data(n=12, seed=1)
    risk = torch.tensor(risk, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: loss(r, time, event, ties), (risk,))


def test_a_batch_without_events_has_zero_loss_and_zero_gradient():
    risk = torch.randn(5, requires_grad=True)
    value = cox_loss(risk, torch.arange(5.0), torch.zeros(5))
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(risk.grad, torch.zeros(5))


def test_cox_loss_is_stable_and_shift_invariant_for_large_risks():
    risk, time, event = tied_data()
    small = loss(torch.tensor(risk, dtype=torch.float32), time, event)
    large = loss(torch.tensor(risk + 1e4, dtype=torch.float32), time, event)
    assert torch.isfinite(large)
    assert large.item() == pytest.approx(small.item(), rel=1e-3)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_newton_gradient_and_hessian_agree_with_autograd_of_the_loss(ties):
    rng = np.random.default_rng(2)
    x, (_, time, event) = rng.normal(size=(30, 3)), tied_data(n=30, seed=2)
    beta = rng.normal(size=3) * 0.3
    log_lik, gradient, neg_hessian = _log_likelihood_terms(x, event, _terms(time, event, ties), beta)

    def minus_log_lik(b):
        return loss(torch.as_tensor(x) @ b, time, event, ties) * event.sum()

    b = torch.tensor(beta)
    assert log_lik == pytest.approx(-minus_log_lik(b).item(), rel=1e-12)
    np.testing.assert_allclose(gradient, -torch.autograd.functional.jacobian(minus_log_lik, b).numpy(), rtol=1e-10)
    np.testing.assert_allclose(neg_hessian, torch.autograd.functional.hessian(minus_log_lik, b).numpy(),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.realdata
def test_rossi_fit_reproduces_the_published_lifelines_figures(rossi):
    model = fit_linear_cox(covariates(rossi), rossi["week"], rossi["arrest"])
    np.testing.assert_allclose(model.coef, list(ROSSI_COEF.values()), atol=5e-4)
    assert model.log_likelihood == pytest.approx(-658.74766, abs=1e-4)
    assert concordance(rossi["week"], model.predict_risk(covariates(rossi)), rossi["arrest"]) == pytest.approx(
        0.640329, abs=1e-6)
    penalised = fit_linear_cox(covariates(rossi), rossi["week"], rossi["arrest"], penalizer=0.1)
    assert concordance(rossi["week"], penalised.predict_risk(covariates(rossi)), rossi["arrest"]) == pytest.approx(
        0.645284, abs=1e-6)


@pytest.mark.realdata
@pytest.mark.parametrize("penalizer", [0.0, 0.1])
def test_rossi_fit_matches_lifelines_fitted_here(rossi, penalizer):
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index

    reference = CoxPHFitter(penalizer=penalizer).fit(rossi, "week", "arrest")
    model = fit_linear_cox(covariates(rossi), rossi["week"], rossi["arrest"], penalizer=penalizer)
    np.testing.assert_allclose(model.coef, reference.params_[list(ROSSI_COEF)].to_numpy(), atol=5e-4)
    risk = model.predict_risk(covariates(rossi))
    np.testing.assert_allclose(risk, reference.predict_log_partial_hazard(rossi).to_numpy(), atol=1e-3)
    c_index = concordance(rossi["week"], risk, rossi["arrest"])
    assert c_index == concordance_index(rossi["week"], -risk, rossi["arrest"])
    assert c_index == pytest.approx(reference.concordance_index_, abs=1e-12)
    if penalizer == 0:
        assert model.log_likelihood == pytest.approx(reference.log_likelihood_, abs=1e-6)


@pytest.mark.realdata
def test_efron_loss_at_lifelines_coefficients_is_its_log_likelihood_per_event(rossi):
    from lifelines import CoxPHFitter

    reference = CoxPHFitter().fit(rossi, "week", "arrest")
    risk = torch.as_tensor(covariates(rossi) @ reference.params_[list(ROSSI_COEF)].to_numpy())
    value = cox_loss(risk, torch.tensor(rossi["week"].to_numpy()), torch.tensor(rossi["arrest"].to_numpy()))
    assert value.item() == pytest.approx(-reference.log_likelihood_ / rossi["arrest"].sum(), abs=1e-6)


def test_penalizer_shrinks_and_makes_constant_columns_harmless():
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.normal(size=80), np.ones(80)])
    time = rng.exponential(np.exp(-x[:, 0]))
    event = rng.random(80) < 0.8
    free = fit_linear_cox(x[:, :1], time, event)
    shrunk = fit_linear_cox(x, time, event, penalizer=0.5)
    assert 0 < abs(shrunk.coef[0]) < abs(free.coef[0])
    assert shrunk.coef[1] == 0.0
    with pytest.raises(ValueError, match="constant feature column"):
        fit_linear_cox(x, time, event)


def test_fit_warns_when_newton_does_not_converge():
    x, time, event = tied_data()
    with pytest.warns(RuntimeWarning, match="did not converge"):
        fit_linear_cox(x[:, None], time, event, max_iter=1)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: loss(np.zeros(3), [1.0, -1.0, 2.0], [1, 0, 1]), "negative"),
    (lambda: loss(np.zeros(3), [1.0, np.nan, 2.0], [1, 0, 1]), "NaN"),
    (lambda: loss(np.zeros(3), [1.0, 2.0, 3.0], [1, 2, 1]), "event must be 0/1"),
    (lambda: loss(np.zeros(3), [1.0, 2.0], [1, 0]), "mismatched lengths"),
    (lambda: loss(np.zeros((3, 1)), [1.0, 2.0, 3.0], [1, 0, 1]), "1-D"),
    (lambda: loss(np.zeros(3), [1.0, 2.0, 3.0], [1, 0, 1], "exact"), "ties must be"),
    (lambda: fit_linear_cox(np.array([[1.0], [np.nan], [2.0]]), [1, 2, 3], [1, 0, 1]), "rows \\[1\\]"),
    (lambda: fit_linear_cox(np.eye(3)[:, :1], [1, 2, 3], [0, 0, 0]), "no events"),
    (lambda: fit_linear_cox(np.eye(3)[:, :1], [1, 2, 3], [1, 0, 1], penalizer=-1), "penalizer"),
])
def test_bad_input_is_a_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cox_loss_on_gpu_equals_cpu():
    risk, time, event = tied_data()
    cpu = loss(risk, time, event)
    gpu_risk = torch.tensor(risk, device="cuda", requires_grad=True)
    gpu = cox_loss(gpu_risk, torch.tensor(time, device="cuda"), torch.tensor(event, device="cuda"))
    gpu.backward()
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-12)
    assert gpu_risk.grad.device.type == "cuda"
