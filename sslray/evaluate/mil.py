"""``sslray evaluate --protocol mil|survival``: slide-level heads under nested CV on Ray Tune.

Every (head, learning rate, weight decay, outer fold) is one Tune trial (``tune_grid``) that
trains on the inner folds, picks its epoch count and refits (``mil_train.run_grid_point``); the
bags travel once through the object store. The best point per head and outer fold is scored on
that fold's test bags, and ``results.json`` reports mean ± sd over the outer folds
(docs/protocols.md, "MIL over bags of tiles", "Nested cross-validation", "Survival").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from sslray import storage, tracking
from sslray.config import to_dict
from sslray.evaluate.attention_maps import ATTENTION_HEADS, attention_examples
from sslray.evaluate.bag_table import BagSource, load_bags
from sslray.evaluate.bags import Bags
from sslray.evaluate.folds import Fold, bag_folds
from sslray.evaluate.metrics import summarise
from sslray.evaluate.mil_results import HeadResult, choose, head_metrics
from sslray.evaluate.mil_train import TrainSettings, run_grid_point
from sslray.evaluate.pictures import draw_bag_pictures
from sslray.evaluate.protocols import register_protocol
from sslray.evaluate.results import lineage_tags, publish_results, results_document
from sslray.evaluate.tune_grid import TrialResources, run_points
from sslray.stage import StageRun, input_name, tracked_run

log = logging.getLogger(__name__)

ALL_HEADS = ["mean_pool", "chowder", "abmil", "dsmil", "transmil"]


@dataclass
class MILConfig:
    embeddings: str = ""
    bags: str | None = None  # CSV: bag_id,label[,patient_id][,split]; else the table's label column
    run_dir: str = "sslray-runs"  # Tune's trials, the results and the default MLflow store
    name: str = ""  # what the run calls the input; default: the table's folder name
    bag_column: str | None = None  # None: slide_id, else patient_id, else image_id
    label_column: str = "label"
    heads: list[str] = field(default_factory=lambda: list(ALL_HEADS))
    head_options: dict[str, dict] = field(default_factory=dict)  # per head, e.g. {transmil: {nystrom: true}}
    lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-4])
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4])
    epochs: int = 50
    batch_size: int = 16
    max_tiles: int = 1000
    standardize: bool = True  # z-score features with each training part's tile statistics
    n_outer: int = 5
    n_inner: int = 5
    seed: int = 0
    cpus_per_trial: float = 0.5
    gpus_per_trial: float = 0.0
    max_parallel: int = 0  # trials at once; 0: as many as the resources allow
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    def __post_init__(self) -> None:
        from sslray.evaluate.mil_heads import heads

        if not self.embeddings:
            raise ValueError("embeddings: the embeddings table URL is required")
        registry = heads()
        unknown = [h for h in self.heads if h not in registry]
        if not self.heads or unknown:
            raise ValueError(f"heads: unknown MIL head(s) {unknown}; registered: {', '.join(registry.names())}")
        for key in ("lrs", "weight_decays"):
            values = getattr(self, key)
            if not values or min(values) < 0 or (key == "lrs" and min(values) == 0):
                raise ValueError(f"{key} must list {'positive' if key == 'lrs' else 'non-negative'} values, "
                                 f"got {values}")
        for key in ("epochs", "batch_size", "max_tiles"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        TrialResources(self.cpus_per_trial, self.gpus_per_trial, self.max_parallel)  # validates them

    @property
    def input_name(self) -> str:
        return self.name or input_name(self.embeddings)

    @property
    def survival(self) -> bool:
        return False

    @property
    def protocol(self) -> str:
        return "survival" if self.survival else "mil"

    def source(self) -> BagSource:
        return BagSource(self.embeddings, self.bags, self.bag_column, self.label_column, survival=False)


@dataclass
class SurvivalConfig(MILConfig):
    time_column: str = "time"
    event_column: str = "event"
    ties: str = "efron"
    cox_penalizers: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])  # the linear Cox baseline's grid

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ties not in ("efron", "breslow"):
            raise ValueError(f"ties must be efron or breslow, got {self.ties!r}")

    @property
    def survival(self) -> bool:
        return True

    def source(self) -> BagSource:
        return BagSource(self.embeddings, self.bags, self.bag_column, time_column=self.time_column,
                         event_column=self.event_column, survival=True)


def run_bag_protocol(cfg: MILConfig) -> dict[str, float]:
    """Evaluate every head of ``cfg`` on the bags (``mil``, or ``survival`` for a ``SurvivalConfig``);
    returns ``{"<head>/<metric>": mean over outer folds}``."""
    protocol = cfg.protocol
    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before any work
    bags = load_bags(cfg.source())  # every input check runs before Ray starts
    folds = bag_folds(bags, cfg.n_outer, cfg.n_inner, cfg.seed, f"embeddings table {cfg.embeddings}")
    points = [{"head": h, "lr": lr, "weight_decay": wd, "fold": k}
              for h in cfg.heads for lr in cfg.lrs for wd in cfg.weight_decays for k in range(len(folds))]
    tags = {**lineage_tags(cfg.embeddings), "sslray.protocol": protocol}
    with tracked_run(cfg.tracking, cfg.run_dir, stage="evaluate", input=cfg.input_name, config=to_dict(cfg),
                     tags=tags) as run:
        log.info("%s: %d bags, %d outer folds, %d trials", protocol, len(bags), len(folds), len(points))
        results = run_points(grid_trial, points, {"bags": bags, "folds": folds, "base": base_settings(cfg, bags),
                                                  "options": cfg.head_options},
                             TrialResources(cfg.cpus_per_trial, cfg.gpus_per_trial, cfg.max_parallel),
                             f"{protocol}-{cfg.input_name}", cfg.run_dir)
        heads = choose(points, results, folds)
        if isinstance(cfg, SurvivalConfig):
            from sslray.evaluate.linear_cox_cv import linear_cox_cv

            heads["linear_cox"] = linear_cox_cv(bags, folds, cfg.cox_penalizers, cfg.ties)
        models = {name: _model_summary(bags, result) for name, result in heads.items()}
        doc = results_document(protocol, "n_bags", len(bags), models, folds=_design(cfg, bags, folds),
                               classes=bags.classes or None, bag_column=bags.bag_column)
        _track(run, points, results, models)
        url = storage.join(cfg.run_dir, "results", protocol, cfg.input_name)
        publish_results(doc, url, run, pictures=_pictures(bags, heads, folds, base_settings(cfg, bags),
                                                          cfg.head_options))
    log.info("%s results: %s", protocol, url)
    return {f"{name}/{metric}": value["mean"] for name, model in models.items()
            for metric, value in model.items() if metric != "best_params"}


def base_settings(cfg: MILConfig, bags: Bags) -> TrainSettings:
    return TrainSettings(head=cfg.heads[0], epochs=cfg.epochs, batch_size=cfg.batch_size, max_tiles=cfg.max_tiles,
                         standardize=cfg.standardize, seed=cfg.seed, survival=cfg.survival,
                         n_classes=max(2, len(bags.classes)),
                         ties=getattr(cfg, "ties", "efron"))


def grid_trial(point: dict, bags: Bags, folds: list[Fold], base: TrainSettings, options: dict) -> dict:
    """One Tune trial: one head and configuration on one outer fold."""
    settings = replace(base, head=point["head"], lr=point["lr"], weight_decay=point["weight_decay"],
                       head_options=dict(options.get(point["head"], {})))
    return run_grid_point(bags, folds[point["fold"]], settings).to_dict()


def _model_summary(bags: Bags, result: HeadResult) -> dict:
    summary: dict = {metric: summarise(values) for metric, values in head_metrics(bags, result).items()}
    summary["best_params"] = result.best_params()
    return summary


def _design(cfg: MILConfig, bags: Bags, folds: list[Fold]) -> dict:
    grouped = "patient_id" if bags.patients is not None else bags.bag_column
    if bags.split is not None:
        return {"scheme": "split column", "inner": len(folds[0].inner), "grouped_by": grouped}
    return {"scheme": "nested", "outer": cfg.n_outer, "inner": cfg.n_inner, "grouped_by": grouped, "seed": cfg.seed}


def _track(run: StageRun, points: list[dict], results: list[dict], models: dict[str, dict]) -> None:
    """The grid (every point's inner score), the outer-fold metrics (step = fold) and their means."""
    for step, (point, result) in enumerate(zip(points, results)):
        run.log_metrics({f"grid/{point['head']}/inner_score": result["best_val"],
                         f"grid/{point['head']}/epochs": result["best_epoch"]}, step=step)
    for name, model in models.items():
        for metric, value in model.items():
            if metric == "best_params":
                continue
            for fold, v in enumerate(value["folds"]):
                if np.isfinite(v):
                    run.log_metrics({f"{name}/{metric}/outer_fold": v}, step=fold)
            run.log_metrics({f"{name}/{metric}/mean": value["mean"], f"{name}/{metric}/sd": value["sd"]})
    run.log_json(points, "grid_points.json")


def _pictures(bags: Bags, heads: dict[str, HeadResult], folds: list[Fold], base: TrainSettings, options: dict):
    """The pictures beside results.json: ROC/confusion or Kaplan-Meier, the bags' map and the attention
    of the attention heads refit as for outer fold 0 with their own ``options`` (linear_cox has none)."""
    def draw(folder: str) -> None:
        attention = {name: attention_examples(bags, folds, result, name,
                                              replace(base, head_options=dict(options.get(name, {}))))
                     for name, result in heads.items() if name in ATTENTION_HEADS}
        draw_bag_pictures(bags, heads, folder, attention=attention)

    return draw


@register_protocol("mil")
class MIL:
    """Slide-level classification with MIL heads (``configs/evaluate/mil.yaml``)."""

    Config = MILConfig
    run = staticmethod(run_bag_protocol)


@register_protocol("survival")
class Survival:
    """Slide-level survival: MIL heads with the Cox loss and a linear Cox model (``configs/evaluate/survival.yaml``)."""

    Config = SurvivalConfig
    run = staticmethod(run_bag_protocol)
