"""``sslray evaluate --protocol knn``: DINO's weighted kNN on tile embeddings, k chosen on Ray Tune.

The table is read and split exactly as the linear probe splits it (``probe_inputs``), so the two
protocols score the same test tiles. Each k of ``k_grid`` is one Tune trial (``tune_grid.run_points``)
that votes for the validation tiles from the inner training tiles; the k with the best validation
balanced accuracy (ties: the smaller k) votes for the test tiles from the whole training split.
``results.json``/``results.md`` are published at ``<run_dir>/results/knn/<input>`` and logged to
MLflow (docs/protocols.md, "Linear probe on tile embeddings"; the kNN maths is ``knn.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from sslray import storage, tracking
from sslray.config import to_dict
from sslray.evaluate.knn import knn_proba
from sslray.evaluate.linear_probe import Split
from sslray.evaluate.probe_inputs import ProbeData, ProbeSettings, load_probe_data, probe_splits, split_facts
from sslray.evaluate.protocols import register_protocol
from sslray.evaluate.results import lineage_tags, publish_results, results_document
from sslray.evaluate.tile_scores import TilePredictions, logged_metrics, scored_model, tile_scores
from sslray.evaluate.tune_grid import TrialResources, run_points
from sslray.stage import tracked_run

log = logging.getLogger(__name__)

PROTOCOL = "knn"


@dataclass
class KNNConfig(ProbeSettings):
    """kNN's keys, after the table and split keys every tile-level probe shares."""

    k_grid: list[int] = field(default_factory=lambda: [10, 20, 50, 100])
    temperature: float = 0.07
    n_bootstrap: int = 1000  # resamples for the test scores' 95% intervals; 0: none
    cpus_per_trial: float = 0.25
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.k_grid or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.k_grid):
            raise ValueError(f"k_grid must list whole numbers of neighbours of at least 1, got {self.k_grid}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be at least 0, got {self.n_bootstrap}")
        TrialResources(self.cpus_per_trial)  # validates it


def run_knn(cfg: KNNConfig) -> dict[str, float]:
    """Score ``cfg.embeddings`` by kNN; returns the test scores, the chosen k and the split sizes."""
    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before any work
    where = f"embeddings table {cfg.embeddings}"
    data = load_probe_data(cfg)
    outer, inner = probe_splits(data.labels, data.groups, cfg.test_fraction, cfg.val_fraction, cfg.seed, where)
    ks = _check_k(cfg.k_grid, len(inner.train), where)
    tags = {**lineage_tags(cfg.embeddings), "sslray.protocol": PROTOCOL}
    with tracked_run(cfg.tracking, cfg.run_dir, stage="evaluate", input=cfg.input_name, config=to_dict(cfg),
                     tags=tags) as run:
        shared = {"features": data.features, "targets": data.targets(), "inner": inner,
                  "temperature": cfg.temperature, "n_classes": len(data.classes)}
        results = run_points(knn_trial, [{"k": k} for k in ks], shared, TrialResources(cfg.cpus_per_trial),
                             f"{PROTOCOL}-{cfg.input_name}", cfg.run_dir)
        best_k = max(zip(ks, results), key=lambda t: (t[1]["val_balanced_accuracy"], -t[0]))[0]
        test = _test_predictions(data, outer, best_k, cfg.temperature)
        scores, model = scored_model(test, data.bootstrap_units(outer.test), cfg.n_bootstrap, cfg.seed, {"k": best_k})
        doc = results_document(PROTOCOL, "n_tiles", len(data.labels), {"knn": model}, classes=data.classes,
                               temperature=cfg.temperature, split=split_facts(data, outer, cfg),
                               grid=[{"k": k, **r} for k, r in zip(ks, results)])
        for k, result in zip(ks, results):
            run.log_metrics({f"grid_{name}": value for name, value in result.items()}, step=k)
        run.log_metrics({**logged_metrics(model, "test_"), "best_k": best_k, "n_train": len(outer.train),
                         "n_test": len(outer.test), "n_classes": len(data.classes)})
        run.set_tags({"sslray.group_column": str(data.group_column)})
        url = storage.join(cfg.run_dir, "results", PROTOCOL, cfg.input_name)
        publish_results(doc, url, run, pictures=data.pictures(test, "knn_"))
    log.info("knn results: %s", url)
    return scores | {"k": best_k, "n_train": int(len(outer.train)), "n_test": int(len(outer.test))}


def _check_k(k_grid: list[int], n_inner_train: int, where: str) -> list[int]:
    """The distinct ks, smallest first; one above the inner training split's size fails here, before Ray starts."""
    ks = sorted(set(k_grid))
    if ks[-1] > n_inner_train:
        raise ValueError(f"{where}: k_grid holds k={ks[-1]}, more neighbours than the {n_inner_train} tiles of the "
                         "inner training split; lower k_grid")
    return ks


def knn_trial(point: dict, features: np.ndarray, targets: np.ndarray, inner: Split, temperature: float,
              n_classes: int) -> dict:
    """One Tune trial: the validation tiles' votes from the inner training tiles, scored."""
    proba = knn_proba(features[inner.train], targets[inner.train], features[inner.test], point["k"], temperature,
                      n_classes=n_classes)
    return {f"val_{k}": v for k, v in tile_scores(TilePredictions(targets[inner.test], proba)).items()}


def _test_predictions(data: ProbeData, outer: Split, k: int, temperature: float) -> TilePredictions:
    targets = data.targets()
    proba = knn_proba(data.features[outer.train], targets[outer.train], data.features[outer.test], k, temperature,
                      n_classes=len(data.classes))
    return data.predictions(outer.test, proba)


@register_protocol(PROTOCOL)
class KNN:
    """Weighted kNN on tile embeddings (``configs/evaluate/knn.yaml``)."""

    Config = KNNConfig
    run = staticmethod(run_knn)
