"""Every profiling metric of one normalised profiles table, and which ones its design allows.

``ProfilingDesign`` names the table's columns that matter (perturbation, replicate groups,
controls, batch, MoA, plate); ``plan`` decides, once, which metrics the design allows and why the
others are skipped (no batch column: no NSB; no MoA: no same-MoA retrieval; no replicates: no
percent replicating); ``score_table`` computes the allowed ones on a normalised table (one Tune
trial of ``sslray evaluate --protocol profiling``). Each metric is reported in the common shape
``{mean, sd, folds, unit}``: ``mean`` is the metric itself, ``folds`` its values per unit (per
perturbation for mAP, activity and percent replicating, per MoA for same-MoA mAP, per plate for the
accuracies, per replicate group for precision at k) and ``sd`` their sample sd. Pure (no Ray);
the definitions are in docs/protocols.md ("Image-based profiling").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sslray.evaluate.metrics import summarise
from sslray.evaluate.nn_accuracy import nn_accuracy
from sslray.evaluate.replicates import (
    group_codes,
    percent_replicating,
    precision_at_k,
    replicate_reproducibility,
    require_columns,
)
from sslray.evaluate.retrieval import fraction_active, map_moa, map_replicates
from sslray.profile.normalize import DEFAULT_CONTROL, control_mask
from sslray.profile.profiles import PLATE, feature_columns

REPLICATE_KEY = "_sslray_replicate_group"
CONTROL_KEY = "\x00control"  # a control well's group: no perturbation label can equal it
ACCURACIES = {"nsc_accuracy": "nsc", "nsb_accuracy": "nsb", "nscb_accuracy": "nscb"}
METRICS = (
    "percent_replicating",
    "replicate_reproducibility",
    "map_replicates",
    "map_moa",
    "fraction_active",
    "nsc_accuracy",
    "nsb_accuracy",
    "nscb_accuracy",
    "precision_at_k",
)


@dataclass
class ProfilingDesign:
    """The columns a profiles table's metrics read, and the metrics' own settings."""

    perturbation_column: str = "Metadata_perturbation"
    replicate_groups: list[str] | None = None  # None: [perturbation_column]
    precision_groups: list[str] | None = None  # precision at k's groups; None: [perturbation_column]
    control: str = DEFAULT_CONTROL  # pandas query over the Metadata_ columns selecting the negative controls
    batch_column: str | None = "Metadata_batch"
    moa_column: str | None = "Metadata_moa"
    plate_column: str | None = PLATE
    quantiles: list[float] = field(default_factory=lambda: [0.5, 0.95])  # replicate reproducibility's
    precision_ks: list[int] = field(default_factory=lambda: [1, 5, 10, 50])
    null_size: int = 10000  # random APs per (positives, candidates) for the mAP p-values
    replicating_null: int = 1000  # random groups per group size for percent replicating
    threshold: float = 0.05  # corrected p below which a perturbation is phenotypically active
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.perturbation_column or not self.control:
            raise ValueError("perturbation_column and control are required")
        if not all(0 < q <= 1 for q in self.quantiles) or not self.quantiles:
            raise ValueError(f"quantiles must lie in (0, 1], got {self.quantiles}")
        if not self.precision_ks or min(self.precision_ks) < 1:
            raise ValueError(f"precision_ks must list whole numbers >= 1, got {self.precision_ks}")
        if self.null_size < 1 or self.replicating_null < 1 or not 0 < self.threshold < 1:
            raise ValueError(
                f"null_size and replicating_null must be >= 1 and threshold in (0, 1); got "
                f"{self.null_size}, {self.replicating_null}, {self.threshold}"
            )

    @property
    def replicates(self) -> list[str]:
        return list(self.replicate_groups or [self.perturbation_column])

    @property
    def precision(self) -> list[str]:
        return list(self.precision_groups or [self.perturbation_column])


@dataclass(frozen=True)
class Plan:
    """What ``score_table`` computes: the allowed metrics, the skipped ones with their reason."""

    allowed: tuple[str, ...]
    skipped: dict[str, str]
    batch_column: str | None
    moa_column: str | None
    plate_column: str | None


def plan(df: pd.DataFrame, design: ProfilingDesign) -> Plan:
    """The metrics ``df``'s design allows; bad input (a missing perturbation or replicate column, a
    control query selecting nothing or everything) is a ValueError naming it."""
    require_columns(df, [design.perturbation_column], "perturbation")
    require_columns(df, design.replicates, "replicate group")
    require_columns(df, design.precision, "precision_groups")
    controls = control_mask(df, design.control)
    if controls.all():
        raise ValueError(f"control query {design.control!r} selects every profile: there is nothing to score")
    treated = df[~controls]
    skipped: dict[str, str] = {}
    batch = _optional(df, design.batch_column, "batch_column", ("nsb_accuracy", "nscb_accuracy"), skipped)
    moa = _optional(df, design.moa_column, "moa_column", ("map_moa", "nsc_accuracy", "nscb_accuracy"), skipped)
    plate = design.plate_column if design.plate_column in df.columns else None
    if batch and treated[batch].nunique() < 2:
        _skip(
            skipped,
            ("nsb_accuracy", "nscb_accuracy"),
            f"one batch ({batch} = {str(treated[batch].iloc[0])!r}): "
            "not-same-batch neighbours need wells in two batches or more",
        )
    elif batch and treated.groupby(design.perturbation_column)[batch].nunique().max() < 2:
        _skip(skipped, ("nsb_accuracy",), f"no perturbation has wells in two batches of {batch}")
    if moa and (treated.dropna(subset=[moa]).groupby(moa)[design.perturbation_column].nunique() < 2).all():
        _skip(
            skipped,
            ("map_moa", "nsc_accuracy", "nscb_accuracy"),
            f"no MoA in {moa} has two perturbations: same-MoA retrieval needs another compound of the MoA",
        )
    sizes = pd.Series(group_codes(treated, design.replicates)).value_counts()
    if sizes.max() < 2:
        _skip(
            skipped,
            ("percent_replicating", "map_replicates", "fraction_active"),
            f"no treated perturbation has two wells under replicate_groups {design.replicates}",
        )
    elif sizes.max() > len(sizes):
        _skip(
            skipped,
            ("percent_replicating",),
            f"a perturbation has {sizes.max()} wells but there are only "
            f"{len(sizes)} perturbations to draw a null group of distinct ones from",
        )
    if pd.Series(group_codes(df, design.replicates)).value_counts().max() < 2:
        _skip(skipped, ("replicate_reproducibility",), f"no two profiles share replicate_groups {design.replicates}")
    allowed = tuple(m for m in METRICS if m not in skipped)
    return Plan(
        allowed,
        skipped,
        batch if "nsb_accuracy" in allowed or "nscb_accuracy" in allowed else None,
        moa if "map_moa" in allowed else None,
        plate,
    )


def _optional(
    df: pd.DataFrame, column: str | None, key: str, metrics: Sequence[str], skipped: dict[str, str]
) -> str | None:
    """``column`` when the table has it; else the ``metrics`` that need it are skipped with the reason."""
    if not column:
        _skip(skipped, metrics, f"{key} is not set")
        return None
    if column not in df.columns:
        _skip(skipped, metrics, f"the table has no {key} column {column!r}")
        return None
    return column


def _skip(skipped: dict[str, str], metrics: Sequence[str], reason: str) -> None:
    for metric in metrics:
        skipped.setdefault(metric, reason)


def consensus(
    treated: pd.DataFrame, features: list[str], design: ProfilingDesign, moa: str | None, aggregation: str
) -> pd.DataFrame:
    """One profile per perturbation: the ``aggregation`` (mean or median) of its wells."""
    keys = [design.perturbation_column] + ([moa] if moa else [])
    return treated.groupby(keys, dropna=False, as_index=False)[features].agg(aggregation)


def summary(mean: float, per_unit: Sequence[float], unit: str) -> dict:
    """{mean (the metric), sd and folds (its values per ``unit``), unit}."""
    return {**summarise(list(per_unit)), "mean": float(mean), "unit": unit}


def score_table(df: pd.DataFrame, design: ProfilingDesign, metrics_plan: Plan, aggregation: str = "mean") -> dict:
    """{"metrics": plain numbers, "summaries": {name: {mean, sd, folds, unit}}, "replicate_maps": records}."""
    df = df.reset_index(drop=True)
    features = feature_columns(df)
    controls = control_mask(df, design.control)
    treated = df[~controls]
    allowed = set(metrics_plan.allowed)
    metrics: dict = {}
    summaries: dict[str, dict] = {}
    replicate_maps: list[dict] = []
    if "replicate_reproducibility" in allowed:
        rr = replicate_reproducibility(df, features, design.replicates, design.quantiles)
        metrics["replicate_reproducibility"] = {str(q): v for q, v in rr.items()}
        summaries.update(
            {f"replicate_reproducibility_q{round(q * 100)}": summary(v, [v], "table") for q, v in rr.items()}
        )
    pk = precision_at_k(df, features, design.precision, design.precision_ks)
    metrics["precision_at_k"] = {str(k): float(g["precision"].mean()) for k, g in pk.groupby("k")}
    metrics["precision_at_k_perfect_groups"] = {str(k): int((g["precision"] == 1).sum()) for k, g in pk.groupby("k")}
    summaries.update(
        {
            f"precision_at_{k}": summary(g["precision"].mean(), g["precision"], "replicate group")
            for k, g in pk.groupby("k")
        }
    )
    if "percent_replicating" in allowed:
        pr = percent_replicating(treated, features, design.replicates, design.replicating_null, seed=design.seed)
        metrics["percent_replicating"] = pr["percent_replicating"]
        summaries["percent_replicating"] = summary(
            pr["percent_replicating"], pr["replicating"].astype(float), "perturbation"
        )
    if "map_replicates" in allowed:
        keyed = df.assign(**{REPLICATE_KEY: np.where(controls, CONTROL_KEY, _labels(df, design.replicates))})
        maps = map_replicates(keyed, features, REPLICATE_KEY, controls, design.null_size, design.seed, design.threshold)
        metrics["map_replicates"] = float(maps["mean_average_precision"].mean())
        metrics["fraction_active"] = fraction_active(maps)
        summaries["map_replicates"] = summary(metrics["map_replicates"], maps["mean_average_precision"], "perturbation")
        summaries["fraction_active"] = summary(
            metrics["fraction_active"], maps["below_corrected_p"].astype(float), "perturbation"
        )
        replicate_maps = maps.rename(columns={REPLICATE_KEY: "perturbation"}).to_dict("records")
    if "map_moa" in allowed:
        profiles = consensus(treated, features, design, metrics_plan.moa_column, aggregation)
        moa_maps = map_moa(
            profiles,
            features,
            metrics_plan.moa_column,
            null_size=design.null_size,
            seed=design.seed,
            threshold=design.threshold,
        )
        metrics["map_moa"] = float(moa_maps["mean_average_precision"].mean())
        summaries["map_moa"] = summary(metrics["map_moa"], moa_maps["mean_average_precision"], "MoA")
    for name, exclude in ACCURACIES.items():
        if name in allowed:
            metrics[name], summaries[name] = _accuracy(treated, features, design, metrics_plan, exclude)
    return {"metrics": metrics, "summaries": summaries, "replicate_maps": replicate_maps}


def _labels(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return df[columns].astype(str).agg(" / ".join, axis=1).to_numpy()


def _accuracy(
    treated: pd.DataFrame, features: list[str], design: ProfilingDesign, metrics_plan: Plan, exclude: str
) -> tuple[float, dict]:
    """One NN accuracy: the perturbation for NSB, the MoA (other compounds) for NSC and NSCB; per plate folds."""
    label = design.perturbation_column if exclude == "nsb" else metrics_plan.moa_column
    out = nn_accuracy(
        treated,
        features,
        label,
        exclude,
        compound_column=design.perturbation_column,
        batch_column=metrics_plan.batch_column,
    )
    correct = out["correct"]
    plates = treated.loc[correct.index, metrics_plan.plate_column] if metrics_plan.plate_column else None
    per_plate = correct.groupby(plates.to_numpy()).mean().to_numpy() if plates is not None else [out["accuracy"]]
    return out["accuracy"], summary(out["accuracy"], per_plate, "plate" if plates is not None else "table")
