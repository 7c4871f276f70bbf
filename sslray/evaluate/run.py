"""``sslray evaluate`` (protocol ``linear_probe``): a linear probe whose regularisation grid runs on Ray Tune.

Each grid point is one Tune trial (``tune_grid.run_points``) that fits one regularisation strength
on the inner training split and scores it on the validation split. The best strength (by
validation balanced accuracy; ties: the smaller C) is refit on the whole training split, and on
label fractions of it (``label_fractions``), and scored once on the held-out test split, with
bootstrap intervals and, where the table has patients, image- and patient-level accuracy.
``results.json``/``results.md`` are published at ``<run_dir>/results/linear_probe/<input>`` and
logged to MLflow with the grid and the test scores (docs/protocols.md, "Linear probe on tile
embeddings"), with the 100% probe as ``head.safetensors`` (``sslray explain --head``'s Grad-CAM head).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from sklearn.pipeline import Pipeline

from sslray import storage, tracking
from sslray.artifacts.linear_head import HEAD_FILE, save_head
from sslray.config import to_dict
from sslray.evaluate.label_fractions import fraction_name, fraction_scores
from sslray.evaluate.linear_probe import Split, class_proba, fit_probe, linear_head, probe_metrics
from sslray.evaluate.metrics import summarise
from sslray.evaluate.probe_inputs import ProbeData, ProbeSettings, load_probe_data, probe_splits, split_facts
from sslray.evaluate.protocols import register_protocol
from sslray.evaluate.results import lineage_tags, publish_results, results_document
from sslray.evaluate.tile_scores import TilePredictions, logged_metrics, scored_model, tile_scores
from sslray.evaluate.tune_grid import TrialResources, run_points
from sslray.stage import StageRun, tracked_run

log = logging.getLogger(__name__)

PROTOCOL = "linear_probe"
FULL = fraction_name(1.0)  # the model fitted on every training label: linear_100%


@dataclass
class EvaluateConfig(ProbeSettings):
    """The linear probe's keys, after the table and split keys every tile-level probe shares."""

    c_grid: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0])
    max_iter: int = 2000
    label_fractions: list[float] = field(default_factory=lambda: [1.0])  # 100% is always fitted; the YAML adds 1%, 10%
    fraction_seeds: int = 3  # subsamples per fraction below 1, reported as mean ± sd
    n_bootstrap: int = 1000  # resamples for the 100% model's 95% intervals; 0: none
    cpus_per_trial: float = 0.5
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out": "run_dir"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ValueError("c_grid must list positive regularisation strengths")
        if not self.label_fractions or not all(0 < f <= 1 for f in self.label_fractions):
            raise ValueError(f"label_fractions must list fractions in (0, 1], got {self.label_fractions}")
        if self.fraction_seeds < 1 or self.n_bootstrap < 0:
            raise ValueError(f"fraction_seeds must be at least 1 and n_bootstrap at least 0, got "
                             f"{self.fraction_seeds} and {self.n_bootstrap}")
        TrialResources(self.cpus_per_trial)  # validates it


def run_evaluate(cfg: EvaluateConfig, tags: dict[str, str] | None = None) -> dict[str, float]:
    """Probe ``cfg.embeddings``; returns the 100% model's test scores, the chosen C and the split sizes."""
    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before any work
    data = load_probe_data(cfg)  # the table and its labels are checked before Ray starts
    outer, inner = probe_splits(data.labels, data.groups, cfg.test_fraction, cfg.val_fraction, cfg.seed,
                                f"embeddings table {cfg.embeddings}")
    run_tags = {**lineage_tags(cfg.embeddings), "sslray.protocol": PROTOCOL, **(tags or {})}
    with tracked_run(cfg.tracking, cfg.run_dir, stage="evaluate", input=cfg.input_name, config=to_dict(cfg),
                     tags=run_tags) as run:
        trials = _grid(cfg, data, inner)
        best_c = max(trials, key=lambda t: (t[1]["val_balanced_accuracy"], -t[0]))[0]
        scores, models, full, probe = _models(cfg, data, outer, best_c)
        doc = results_document(PROTOCOL, "n_tiles", len(data.labels), models, classes=data.classes,
                               split=split_facts(data, outer, cfg), grid=[{"C": c, **m} for c, m in trials])
        _track(run, data, outer, best_c, trials, models)
        url = storage.join(cfg.run_dir, "results", PROTOCOL, cfg.input_name)
        publish_results(doc, url, run, pictures=_with_head(data.pictures(full, "linear_"), probe, cfg.embeddings))
    log.info("linear probe results: %s", url)
    return scores | {"C": best_c, "n_train": int(len(outer.train)), "n_test": int(len(outer.test))}


def _grid(cfg: EvaluateConfig, data: ProbeData, inner: Split) -> list[tuple[float, dict[str, float]]]:
    """The regularisation grid on Ray Tune: (C, validation scores) of every grid point, in grid order."""
    points = [{"C": float(c)} for c in cfg.c_grid]
    shared = {"features": data.features, "labels": data.labels, "inner": inner, "max_iter": cfg.max_iter,
              "seed": cfg.seed}
    results = run_points(grid_trial, points, shared, TrialResources(cfg.cpus_per_trial),
                         f"{PROTOCOL}-{cfg.input_name}", cfg.run_dir)
    return [(p["C"], r) for p, r in zip(points, results)]


def grid_trial(point: dict, features: np.ndarray, labels: np.ndarray, inner: Split, max_iter: int, seed: int) -> dict:
    """One grid point: fit on the inner training split, score on the validation split."""
    model = fit_probe(features[inner.train], labels[inner.train], point["C"], max_iter, seed)
    return {f"val_{k}": v for k, v in probe_metrics(model, features[inner.test], labels[inner.test]).items()}


def _models(cfg: EvaluateConfig, data: ProbeData, outer: Split,
            best_c: float) -> tuple[dict[str, float], dict[str, dict], TilePredictions, Pipeline]:
    """(the 100% model's scores, every model's results.json entry, its test predictions, the model)."""

    def fit_and_predict(rows: np.ndarray) -> TilePredictions:
        return predict(fit_probe(data.features[rows], data.labels[rows], best_c, cfg.max_iter, cfg.seed))

    def predict(model: Pipeline) -> TilePredictions:
        return data.predictions(outer.test, class_proba(model, data.classes, data.features[outer.test]))

    seeds = [cfg.seed + i for i in range(cfg.fraction_seeds)]
    models: dict[str, dict] = {}
    for fraction in sorted(set(cfg.label_fractions) - {1.0}):
        per_seed = fraction_scores(data.labels, data.groups, outer.train, fraction, seeds,
                                   lambda rows: tile_scores(fit_and_predict(rows)))
        models[fraction_name(fraction)] = {
            **{metric: summarise([s[metric] for _, s in per_seed]) for metric in per_seed[0][1]},
            "best_params": {"C": best_c, "seeds": seeds}, "n_train": [n for n, _ in per_seed]}
    probe = fit_probe(data.features[outer.train], data.labels[outer.train], best_c, cfg.max_iter, cfg.seed)
    full = predict(probe)
    scores, models[FULL] = scored_model(full, data.bootstrap_units(outer.test), cfg.n_bootstrap, cfg.seed,
                                        {"C": best_c})
    return scores, models, full, probe


def _with_head(pictures: Callable[[str], None], probe: Pipeline, embeddings: str) -> Callable[[str], None]:
    """The pictures, then the 100% probe as ``head.safetensors`` beside them, with what the table's
    embeddings were (its ``_SUCCESS`` record) so a Grad-CAM feeds the head the same vectors."""
    try:
        facts = storage.read_json(storage.join(embeddings, storage.SUCCESS_MARKER))
    except (OSError, ValueError):
        facts = {}
    facts = facts if isinstance(facts, dict) else {}
    lineage = {k.removeprefix("sslray."): v for k, v in lineage_tags(embeddings).items()}
    head = linear_head(probe, l2_normalized=bool(facts.get("l2_normalized", False)),
                       per_channel=bool(facts.get("per_channel", False)), lineage=lineage)

    def draw(folder: str) -> None:
        pictures(folder)
        save_head(os.path.join(folder, HEAD_FILE), head)

    return draw


def _track(run: StageRun, data: ProbeData, outer: Split, best_c: float, trials, models: dict[str, dict]) -> None:
    for c, metrics in sorted(trials, key=lambda t: t[0]):
        run.log_metrics({f"grid_{k}": v for k, v in metrics.items()}, step=_c_step(c))
    run.log_metrics({**logged_metrics(models[FULL], "test_"), "best_C": best_c, "n_train": len(outer.train),
                     "n_test": len(outer.test), "n_classes": len(data.classes)})
    for name, model in models.items():
        if name != FULL:  # MLflow names allow no '%': linear_10% is logged as linear_10pct/<metric>
            run.log_metrics(logged_metrics(model, f"{name.replace('%', 'pct')}/"))
    run.set_tags({"sslray.group_column": str(data.group_column)})
    log.info("evaluate run %s logged to %s", run.run_id, tracking.redact_url(run.uri))


def _c_step(c: float) -> int:
    """MLflow steps are integers: index the grid by log10(C) shifted to be non-negative."""
    return int(round((np.log10(c) + 10) * 100))


@register_protocol(PROTOCOL)
class LinearProbe:
    """The tile-level linear probe (``configs/evaluate/linear_probe.yaml``)."""

    Config = EvaluateConfig

    @staticmethod
    def run(cfg: EvaluateConfig) -> dict[str, float]:
        return run_evaluate(cfg)  # looked up when called: tests replace run_evaluate
