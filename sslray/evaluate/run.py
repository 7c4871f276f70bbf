"""``sslray evaluate``: a linear probe whose regularisation grid runs on Ray Tune.

Each Tune trial fits one regularisation strength on the inner training split and scores it
on the validation split; the best strength (by validation balanced accuracy) is refit on the
whole training split and scored once on the held-out test split. Trials and the final
scores are logged to MLflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from sslray import storage, tracking
from sslray.artifacts import PROBE_TABLES
from sslray.artifacts.vector_table import VectorTable
from sslray.evaluate.linear_probe import Split, fit_probe, probe_metrics
from sslray.config import to_dict
from sslray.evaluate.probe_inputs import check_classes, probe_splits, resolve_group_column
from sslray.evaluate.protocols import register_protocol
from sslray.stage import StageRun, input_name, tracked_run

log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    embeddings: str = ""
    run_dir: str = "sslray-runs"  # Tune's trials and the default MLflow store
    name: str = ""  # what the run calls the input (``evaluate NAME``); default: the table's folder name
    label_column: str = "label"
    group_column: str | None = None  # None: "group" if filled, else image_id (printed); a named one must exist
    test_fraction: float = 0.25
    val_fraction: float = 0.2
    c_grid: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0])
    max_iter: int = 2000
    seed: int = 0
    cpus_per_trial: float = 0.5
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out": "run_dir"}

    def __post_init__(self) -> None:
        if not self.embeddings:
            raise ValueError("embeddings: the embeddings table URL is required")
        for key in ("test_fraction", "val_fraction"):
            if not 0 < getattr(self, key) < 1:
                raise ValueError(f"{key} must be in (0, 1), got {getattr(self, key)}")
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ValueError("c_grid must list positive regularisation strengths")

    @property
    def input_name(self) -> str:
        return self.name or input_name(self.embeddings)


@dataclass
class ProbeData:
    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    group_column: str | None


def load_probe_data(cfg: EvaluateConfig) -> ProbeData:
    vectors = VectorTable.read(cfg.embeddings, PROBE_TABLES)  # names a tile store, image folder or typo as such
    table = vectors.table
    if cfg.label_column not in table.column_names:
        raise KeyError(f"{cfg.embeddings}: no label column {cfg.label_column!r} (columns: {table.column_names})")
    labels = np.asarray(table.column(cfg.label_column).to_pylist(), dtype=object)
    keep = np.array([v is not None and v == v for v in labels])  # unlabelled tiles are not probed
    if keep.sum() == 0:
        raise ValueError(f"{cfg.embeddings}: column {cfg.label_column!r} holds no labels")
    features = vectors.matrix()[keep]
    where = f"embeddings table {cfg.embeddings}"
    group_col = resolve_group_column(table, cfg.group_column, keep, where)
    groups = np.asarray(table.column(group_col).to_pylist(), dtype=object)[keep] if group_col else None
    check_classes(labels[keep].astype(str), groups, where, cfg.label_column, group_col)
    return ProbeData(features.astype(np.float32), labels[keep].astype(str), groups, group_col)


def run_evaluate(cfg: EvaluateConfig, tags: dict[str, str] | None = None) -> dict[str, float]:
    """Probe ``cfg.embeddings``; returns the test scores, the chosen C and the split sizes."""
    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before any work
    data = load_probe_data(cfg)  # the table and its labels are checked before Ray starts
    outer, inner = probe_splits(data.labels, data.groups, cfg.test_fraction, cfg.val_fraction, cfg.seed,
                                f"embeddings table {cfg.embeddings}")
    run_tags = {"sslray.embeddings": tracking.redact(cfg.embeddings), **(tags or {})}
    with tracked_run(cfg.tracking, cfg.run_dir, stage="evaluate", input=cfg.input_name, config=to_dict(cfg),
                     tags=run_tags) as run:
        trials = _grid(cfg, data, inner)
        best_c = max(trials, key=lambda t: (t[1]["val_balanced_accuracy"], -t[0]))[0]
        final = fit_probe(data.features[outer.train], data.labels[outer.train], best_c, cfg.max_iter, cfg.seed)
        scores = probe_metrics(final, data.features[outer.test], data.labels[outer.test])
        _track(run, data, outer, best_c, trials, scores)
    return scores | {"C": best_c, "n_train": int(len(outer.train)), "n_test": int(len(outer.test))}


def _grid(cfg: EvaluateConfig, data: ProbeData, inner: Split) -> list[tuple[float, dict[str, float]]]:
    """The regularisation grid on Ray Tune: (C, validation scores) of every trial that finished."""
    from ray import tune

    from sslray.runtime import ensure_ray

    ensure_ray()
    trainable = tune.with_resources(
        tune.with_parameters(
            _tune_trial, features=data.features, labels=data.labels, inner=inner, max_iter=cfg.max_iter, seed=cfg.seed
        ),
        {"CPU": cfg.cpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"C": tune.grid_search(list(cfg.c_grid))},
        tune_config=tune.TuneConfig(metric="val_balanced_accuracy", mode="max"),
        run_config=tune.RunConfig(name=cfg.input_name, storage_path=storage.join(storage.local_path(cfg.run_dir), "tune"),
                                  verbose=0),
    )
    grid = tuner.fit()
    trials = [(r.config["C"], {k: v for k, v in r.metrics.items() if k.startswith("val_")})
              for r in grid if r.error is None]
    if not trials:
        raise RuntimeError(f"every probe trial failed; first error: {next(iter(grid)).error}")
    return trials


def _tune_trial(config: dict, features, labels, inner: Split, max_iter: int, seed: int) -> dict:
    """One grid point: fit on the inner training split, score on the validation split."""
    model = fit_probe(features[inner.train], labels[inner.train], config["C"], max_iter, seed)
    return {f"val_{k}": v for k, v in probe_metrics(model, features[inner.test], labels[inner.test]).items()}


def _track(run: StageRun, data: ProbeData, outer: Split, best_c: float, trials, scores: dict[str, float]) -> None:
    for c, metrics in sorted(trials, key=lambda t: t[0]):
        run.log_metrics({f"grid_{k}": v for k, v in metrics.items()}, step=_c_step(c))
    run.log_metrics({**{f"test_{k}": v for k, v in scores.items()}, "best_C": best_c,
                     "n_train": len(outer.train), "n_test": len(outer.test), "n_classes": len(np.unique(data.labels))})
    run.set_tags({"sslray.group_column": str(data.group_column)})
    log.info("evaluate run %s logged to %s", run.run_id, tracking.redact_url(run.uri))


def _c_step(c: float) -> int:
    """MLflow steps are integers: index the grid by log10(C) shifted to be non-negative."""
    return int(round((np.log10(c) + 10) * 100))


@register_protocol("linear_probe")
class LinearProbe:
    """The tile-level linear probe (``configs/evaluate/linear_probe.yaml``)."""

    Config = EvaluateConfig

    @staticmethod
    def run(cfg: EvaluateConfig) -> dict[str, float]:
        return run_evaluate(cfg)
