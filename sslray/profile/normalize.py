"""Normalisation of profiles: named, configurable steps run in order (a pipeline).

A pipeline is a list of ``{name: STEP, **options}`` (configs/profile/cellpainting.yaml); each STEP
is registered in ``NORMALIZERS`` (``sslray.registry``, which refuses a name registered twice) with
its options as a dataclass, so a misspelt option is an error naming the step. The default is
CellPaintSSL's (Kim et al. 2023) and uniDINO's: drop near-constant features, spherize on the
negative controls, MAD-robustize per plate.

- ``variance_filter``: drop features whose variance over all profiles is <= ``threshold`` (1e-5).
- ``spherize``: ZCA whitening (``ZCA-cor``, pycytominer's default, or ``ZCA``) fitted on the
  controls, over all plates (``by: null``) or per plate (``by: Metadata_Plate``); ε 1e-6.
- ``mad_robustize``: ``(x - median) / (1.4826 · MAD + ε)`` per plate, fitted on all profiles or on
  the controls (pycytominer's ``mad_robustize``).
- ``standardize``: ``(x - mean) / sd`` (ddof 0, as scikit-learn) per plate, fitted on the controls.
- ``tvn``: typical variation normalisation (Ando et al. 2017): PCA whitening fitted on the
  controls, then each plate centred on its controls (``center_by``). Its features are principal
  axes, named ``PC_000 ...``.

Which profiles are controls is a pandas query over the ``Metadata_`` columns
(``Metadata_control == True``, ``Metadata_perturbation == 'DMSO'``). A step that fits on controls
where a plate has none, a query that selects nothing, and a feature that is constant where a step
divides by its spread are errors naming the plate, the step and the columns, never a silent NaN.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from sslray.config import ConfigError, from_dict
from sslray.profile.profiles import PLATE, feature_columns, metadata_columns
from sslray.profile.whitening import pca_whitening_fit, zca_fit
from sslray.registry import Registry

log = logging.getLogger(__name__)

Fit = Literal["controls", "all"]
DEFAULT_CONTROL = "Metadata_control == True"
DEFAULT_PIPELINE: list[dict[str, Any]] = [
    {"name": "variance_filter", "threshold": 1e-5},
    {"name": "spherize", "method": "ZCA-cor", "epsilon": 1e-6, "by": None},
    {"name": "mad_robustize", "by": PLATE, "fit": "all"},
]


@dataclass
class Step:
    """A registered step: its options dataclass and ``apply(df, features, controls, options) -> df``."""

    options: type
    apply: Callable[[pd.DataFrame, list[str], np.ndarray | None, Any], pd.DataFrame]


NORMALIZERS: Registry[Step] = Registry("normalisation step")


@dataclass
class VarianceFilter:
    threshold: float = 1e-5


@dataclass
class Spherize:
    method: Literal["ZCA-cor", "ZCA"] = "ZCA-cor"
    epsilon: float = 1e-6
    center: bool = True
    by: str | None = None  # None: one fit over all plates; Metadata_Plate: one per plate
    fit: Fit = "controls"


@dataclass
class MadRobustize:
    by: str | None = PLATE
    fit: Fit = "all"
    epsilon: float = 1e-18


@dataclass
class Standardize:
    by: str | None = PLATE
    fit: Fit = "controls"


@dataclass
class TVN:
    n_components: int | None = None  # default: every direction the controls span, min(n - 1, d)
    center_by: str | None = PLATE  # after whitening, subtract each plate's control mean; None: keep
    fit: Fit = "controls"


def parse_pipeline(steps: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """``[{name: STEP, **options}]`` -> ``[(STEP, options dataclass)]``; an unknown step or option is a ConfigError."""
    parsed = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or "name" not in step:
            raise ConfigError(f"normalize[{i}]: each step is a mapping with a name ({NORMALIZERS.names()}), "
                              f"got {step!r}")
        name = str(step["name"])
        if name not in NORMALIZERS:
            raise ConfigError(f"normalize[{i}]: unknown normalisation step {name!r}; registered: {NORMALIZERS.names()}")
        options = {k: v for k, v in step.items() if k != "name"}
        parsed.append((name, from_dict(NORMALIZERS.get(name).options, options, f"normalize[{i}] ({name})")))
    return parsed


def apply_pipeline(df: pd.DataFrame, steps: list[dict[str, Any]], control_query: str = DEFAULT_CONTROL
                   ) -> pd.DataFrame:
    """``df`` normalised by ``steps`` in order; ``control_query`` picks the rows steps fit on with ``fit: controls``."""
    parsed = parse_pipeline(steps)
    needs_controls = any(getattr(options, "fit", "all") == "controls" for _, options in parsed)
    controls = control_mask(df, control_query) if needs_controls else None
    out = df.reset_index(drop=True)
    for name, options in parsed:
        out = NORMALIZERS.get(name).apply(out, feature_columns(out), controls, options)
        log.info("normalisation %s: %d features", name, len(feature_columns(out)))
    return out


def control_mask(df: pd.DataFrame, query: str) -> np.ndarray:
    """The rows ``query`` selects, as a boolean array; a failing query or an empty selection is a ValueError."""
    meta = df[metadata_columns(df)].reset_index(drop=True)
    try:
        selected = meta.query(query)
    except Exception as err:  # pandas raises NameError, SyntaxError, TypeError... for a bad query
        raise ValueError(f"control query {query!r} fails on the metadata columns {list(meta.columns)}: {err}") from None
    if selected.empty:
        raise ValueError(f"control query {query!r} selects no profile; set control= to the query that picks the "
                         "negative-control wells (e.g. \"Metadata_perturbation == 'DMSO'\")")
    mask = np.zeros(len(meta), dtype=bool)
    mask[selected.index.to_numpy()] = True
    return mask


def groups(df: pd.DataFrame, by: str | None, step: str) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, row mask)`` per value of ``by`` (one group named ``all profiles`` when None)."""
    if by is None:
        yield "all profiles", np.ones(len(df), dtype=bool)
        return
    if by not in df.columns:
        raise ValueError(f"{step}: by={by!r} is not a column (metadata: {metadata_columns(df)})")
    for value in pd.unique(df[by]):
        yield f"{by} {value}", (df[by] == value).to_numpy()


def fit_rows(rows: np.ndarray, controls: np.ndarray | None, fit: str, step: str, group: str) -> np.ndarray:
    """The rows of ``group`` a step fits on: all of them, or its controls (none is an error naming the group)."""
    if fit == "all":
        return rows
    chosen = rows & controls
    if not chosen.any():
        raise ValueError(f"{step}: {group} has no control profiles to fit on (the control query selects none of its "
                         f"{int(rows.sum())} profiles); add controls to it, or set fit: all")
    return chosen


def check_spread(values: np.ndarray, features: list[str], step: str, group: str) -> None:
    """No feature may be constant (or all NaN) in the rows a step divides by their spread."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: reported below
        spread = np.nanstd(values, axis=0)
    constant = [f for f, ok in zip(features, spread > 0) if not ok]
    if constant:
        raise ValueError(f"{step}: {len(constant)} feature(s) are constant in the fitted profiles of {group}: "
                         f"{constant[:5]}; put variance_filter before {step} to drop them")


def with_features(df: pd.DataFrame, features: list[str], values: np.ndarray) -> pd.DataFrame:
    """``df`` with its ``features`` replaced by ``values`` (built in one go: a per-column write of
    thousands of features is what made pandas slow here)."""
    new = pd.DataFrame(values, columns=features, index=df.index)
    return pd.concat([df.drop(columns=features), new], axis=1)[list(df.columns)]


def check_finite(values: np.ndarray, features: list[str], step: str) -> None:
    bad = [f for f, ok in zip(features, np.isfinite(values).all(axis=0)) if not ok]
    if bad:
        raise ValueError(f"{step}: feature(s) {bad[:5]} hold NaN or infinite values; whitening needs every value")


def _variance_filter(df: pd.DataFrame, features: list[str], controls, options: VarianceFilter) -> pd.DataFrame:
    variance = df[features].var(ddof=0)
    dropped = variance.index[~(variance > options.threshold)].tolist()
    if len(dropped) == len(features):
        raise ValueError(f"variance_filter: every feature has variance <= {options.threshold}")
    if dropped:
        log.info("variance_filter drops %d feature(s) with variance <= %g: %s", len(dropped), options.threshold,
                 dropped[:5])
    return df.drop(columns=dropped)


def _spherize(df: pd.DataFrame, features: list[str], controls, options: Spherize) -> pd.DataFrame:
    values = df[features].to_numpy(np.float64)
    check_finite(values, features, "spherize")
    out = values.copy()
    for group, rows in groups(df, options.by, "spherize"):
        fitted = values[fit_rows(rows, controls, options.fit, "spherize", group)]
        check_spread(fitted, features, "spherize", group)
        try:
            whitening = zca_fit(fitted, options.method, options.epsilon, options.center)
        except ValueError as err:
            raise ValueError(f"{err} ({group})") from None
        out[rows] = whitening.apply(values[rows])
    return with_features(df, features, out)


def _mad_robustize(df: pd.DataFrame, features: list[str], controls, options: MadRobustize) -> pd.DataFrame:
    def median_mad(fitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        median = np.nanmedian(fitted, axis=0)
        return median, np.nanmedian(np.abs(fitted - median), axis=0) * 1.4826 + options.epsilon

    return _scale_per_group(df, features, controls, options.by, options.fit, "mad_robustize", median_mad)


def _standardize(df: pd.DataFrame, features: list[str], controls, options: Standardize) -> pd.DataFrame:
    return _scale_per_group(df, features, controls, options.by, options.fit, "standardize",
                            lambda fitted: (np.nanmean(fitted, axis=0), np.nanstd(fitted, axis=0)))


def _scale_per_group(df: pd.DataFrame, features: list[str], controls: np.ndarray | None, by: str | None, fit: str,
                     step: str, center_scale: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """``(x - center) / scale`` per group of ``by``, both fitted on the group's ``fit`` rows (NaN skipped)."""
    values = df[features].to_numpy(np.float64)
    out = values.copy()
    for group, rows in groups(df, by, step):
        fitted = values[fit_rows(rows, controls, fit, step, group)]
        check_spread(fitted, features, step, group)
        center, scale = center_scale(fitted)
        out[rows] = (values[rows] - center) / scale
    return with_features(df, features, out)


def _tvn(df: pd.DataFrame, features: list[str], controls, options: TVN) -> pd.DataFrame:
    values = df[features].to_numpy(np.float64)
    check_finite(values, features, "tvn")
    fitted = fit_rows(np.ones(len(df), dtype=bool), controls, options.fit, "tvn", "all profiles")
    check_spread(values[fitted], features, "tvn", "all profiles")
    whitened = pca_whitening_fit(values[fitted], options.n_components).apply(values)
    if options.center_by is not None:
        for group, rows in groups(df, options.center_by, "tvn"):
            reference = fit_rows(rows, controls, options.fit, "tvn", group)
            whitened[rows] -= whitened[reference].mean(axis=0)
    width = max(3, len(str(whitened.shape[1] - 1)))
    axes = pd.DataFrame(whitened, columns=[f"PC_{i:0{width}d}" for i in range(whitened.shape[1])], index=df.index)
    return pd.concat([df.drop(columns=features), axes], axis=1)


for _name, _step in (("variance_filter", Step(VarianceFilter, _variance_filter)),
                     ("spherize", Step(Spherize, _spherize)), ("mad_robustize", Step(MadRobustize, _mad_robustize)),
                     ("standardize", Step(Standardize, _standardize)), ("tvn", Step(TVN, _tvn))):
    NORMALIZERS.register(_name)(_step)
