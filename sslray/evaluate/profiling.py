"""``sslray evaluate --protocol profiling``: a profiles table scored like CellPaintSSL and uniDINO, on Ray Tune.

The table (``sslray profile``'s, or anyone's with ``Metadata_*`` columns and one column per
feature) is read and its design checked once (``profiling_scores.plan``: which metrics it allows,
why the others are skipped). Every (normalisation pipeline x consensus aggregation) is one Tune
trial (``tune_grid.run_points``) that normalises the table (``sslray.profile.normalize``) and
scores every allowed metric; the table travels once through the object store. ``results.json``
holds ``metrics`` (the first pipeline and aggregation, plain numbers), ``skipped``, ``models`` (one
per trial, in the common shape) and ``best`` per metric; it is published with ``results.md`` and the
pictures at ``<run_dir>/results/profiling/<input>`` and logged to MLflow with the table's lineage
(docs/protocols.md, "Image-based profiling").
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sslray import storage, tracking
from sslray.config import to_dict
from sslray.evaluate.channel_attribution import channel_attribution, channel_blocks
from sslray.evaluate.profiling_pictures import channel_bars, map_vs_pvalue, profiles_map
from sslray.evaluate.profiling_scores import Plan, ProfilingDesign, plan, score_table
from sslray.evaluate.protocols import register_protocol
from sslray.evaluate.results import lineage_tags, publish_results, results_document
from sslray.evaluate.tune_grid import TrialResources, run_points
from sslray.profile.normalize import apply_pipeline, control_mask, parse_pipeline
from sslray.profile.profiles import CSV_SUFFIXES, PLATE, feature_columns, read_profiles
from sslray.stage import StageRun, input_name, tracked_run

log = logging.getLogger(__name__)

PROTOCOL = "profiling"
AGGREGATIONS = ("mean", "median")
DEFAULT_PIPELINES: dict[str, list[dict[str, Any]]] = {
    "as_given": [],
    "mad_robustize": [{"name": "mad_robustize", "by": PLATE}],
    "spherize_mad_robustize": [
        {"name": "variance_filter"},
        {"name": "spherize"},
        {"name": "mad_robustize", "by": PLATE},
    ],
    "standardize": [{"name": "standardize", "by": PLATE}],
    "tvn": [{"name": "tvn"}],
}


@dataclass
class ProfilingConfig(ProfilingDesign):
    """The protocol's keys, after the design keys the metrics read (``ProfilingDesign``)."""

    embeddings: str = ""  # the profiles table: parquet file or folder, CSV or CSV.gz
    run_dir: str = "sslray-runs"  # Tune's trials, the results and the default MLflow store
    name: str = ""  # what the run calls the input; default: the table's file or folder name
    pipelines: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_PIPELINES))
    aggregations: list[str] = field(default_factory=lambda: ["mean", "median"])  # consensus for map_moa
    channel_trees: int = 200  # random-forest trees for the channel attribution; 0: none
    cpus_per_trial: float = 0.5
    max_parallel: int = 0  # trials at once; 0: as many as the resources allow
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.embeddings:
            raise ValueError("embeddings: the profiles table URL is required")
        if not self.pipelines:
            raise ValueError("pipelines: name at least one normalisation pipeline (as_given: [] keeps the table)")
        for name, steps in self.pipelines.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
                raise ValueError(
                    f"pipelines: the name {name!r} may hold only letters, digits, '_', '.' and '-' "
                    "(it names the model PIPELINE/AGGREGATION and its MLflow metrics)"
                )
            parse_pipeline(steps)  # an unknown step or option fails here, before any work
        bad = [a for a in self.aggregations if a not in AGGREGATIONS]
        if not self.aggregations or bad:
            raise ValueError(f"aggregations must list {' or '.join(AGGREGATIONS)}, got {self.aggregations}")
        if self.channel_trees < 0:
            raise ValueError(f"channel_trees must be at least 0, got {self.channel_trees}")
        TrialResources(self.cpus_per_trial, 0.0, self.max_parallel)  # validates them

    @property
    def input_name(self) -> str:
        name = self.name or input_name(self.embeddings)
        for suffix in (".parquet", *CSV_SUFFIXES):
            name = name.removesuffix(suffix)
        return name

    def design(self) -> ProfilingDesign:
        """The design keys alone: what each trial needs (a small object to ship)."""
        return ProfilingDesign(**{k: getattr(self, k) for k in ProfilingDesign.__dataclass_fields__})


def run_profiling(cfg: ProfilingConfig) -> dict:
    """Score ``cfg.embeddings``; returns the first pipeline and aggregation's metrics and the skipped ones."""
    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before any work
    table = read_profiles(cfg.embeddings).reset_index(drop=True)
    design = cfg.design()
    try:
        metrics_plan = plan(table, design)  # every input check runs before Ray starts
    except ValueError as err:
        raise ValueError(f"profiles table {cfg.embeddings}: {err}") from None
    points = [{"pipeline": p, "aggregation": a} for p in cfg.pipelines for a in cfg.aggregations]
    tags = {**lineage_tags(cfg.embeddings), "sslray.protocol": PROTOCOL}
    with tracked_run(
        cfg.tracking, cfg.run_dir, stage="evaluate", input=cfg.input_name, config=to_dict(cfg), tags=tags
    ) as run:
        log.info("profiling: %d profiles, %d trials, skipped %s", len(table), len(points), sorted(metrics_plan.skipped))
        shared = {"table": table, "design": design, "metrics_plan": metrics_plan, "pipelines": cfg.pipelines}
        results = run_points(
            profiling_trial,
            points,
            shared,
            TrialResources(cfg.cpus_per_trial, 0.0, cfg.max_parallel),
            f"{PROTOCOL}-{cfg.input_name}",
            cfg.run_dir,
        )
        models = {model_name(p): {**r["summaries"], "best_params": p} for p, r in zip(points, results)}
        first = results[0]["metrics"]
        attribution = _attribution(table, cfg)
        doc = results_document(
            PROTOCOL,
            "n_profiles",
            len(table),
            models,
            metrics=first,
            skipped=metrics_plan.skipped,
            best=best_models(models),
            design=_design(table, cfg),
            pipelines=cfg.pipelines,
            channel_attribution=_attribution_doc(attribution),
        )
        _track(run, points, results)
        url = storage.join(cfg.run_dir, "results", PROTOCOL, cfg.input_name)
        publish_results(doc, url, run, pictures=_pictures(table, cfg, metrics_plan, results[0], attribution))
    log.info("profiling results: %s", url)
    return {"metrics": first, "skipped": metrics_plan.skipped}


def profiling_trial(
    point: dict, table: pd.DataFrame, design: ProfilingDesign, metrics_plan: Plan, pipelines: dict[str, list[dict]]
) -> dict:
    """One Tune trial: normalise the table with one pipeline and score every allowed metric."""
    steps = pipelines[point["pipeline"]]
    normalised = apply_pipeline(table, steps, design.control) if steps else table
    return score_table(normalised, design, metrics_plan, point["aggregation"])


def model_name(point: dict) -> str:
    return f"{point['pipeline']}/{point['aggregation']}"


def best_models(models: dict[str, dict]) -> dict[str, dict]:
    """{metric: {"model", "mean"}}: the model with the highest mean (every profiling metric is higher-better;
    ties go to the earlier model)."""
    best: dict[str, dict] = {}
    for name, model in models.items():
        for metric, value in model.items():
            if metric != "best_params" and (metric not in best or value["mean"] > best[metric]["mean"]):
                best[metric] = {"model": name, "mean": value["mean"]}
    return best


def _design(table: pd.DataFrame, cfg: ProfilingConfig) -> dict:
    controls = control_mask(table, cfg.control)
    treated = table[~controls]
    count = {
        key: int(treated[col].nunique())
        for key, col in (("n_batches", cfg.batch_column), ("n_plates", cfg.plate_column), ("n_moas", cfg.moa_column))
        if col and col in table.columns
    }
    return {
        "perturbation_column": cfg.perturbation_column,
        "replicate_groups": cfg.replicates,
        "precision_groups": cfg.precision,
        "control": cfg.control,
        "batch_column": cfg.batch_column,
        "moa_column": cfg.moa_column,
        "plate_column": cfg.plate_column,
        "n_controls": int(controls.sum()),
        "n_perturbations": int(treated[cfg.perturbation_column].nunique()),
        **count,
        "n_features": len(feature_columns(table)),
        "null_size": cfg.null_size,
        "seed": cfg.seed,
    }


def _attribution(table: pd.DataFrame, cfg: ProfilingConfig) -> dict | None:
    """The channel attribution of the table as given, when its features are named by channel."""
    features = feature_columns(table)
    if not cfg.channel_trees or not channel_blocks(features):
        return None
    return channel_attribution(
        table,
        features,
        control_mask(table, cfg.control),
        cfg.perturbation_column,
        n_estimators=cfg.channel_trees,
        seed=cfg.seed,
    )


def _attribution_doc(attribution: dict | None) -> dict | None:
    if attribution is None:
        return None
    return {
        "overall": attribution["overall"].to_dict(),
        "per_perturbation": attribution["per_perturbation"].to_dict(orient="index"),
    }


def _track(run: StageRun, points: list[dict], results: list[dict]) -> None:
    """Every trial's metrics under ``<pipeline>/<aggregation>/<metric>`` (mean and sd), the grid as JSON."""
    for point, result in zip(points, results):
        prefix = model_name(point)
        run.log_metrics({f"{prefix}/{m}": v["mean"] for m, v in result["summaries"].items()})
        run.log_metrics({f"{prefix}/{m}_sd": v["sd"] for m, v in result["summaries"].items()})
    run.log_json(points, "grid_points.json")


def _pictures(table: pd.DataFrame, cfg: ProfilingConfig, metrics_plan: Plan, first: dict, attribution: dict | None):
    """The pictures beside results.json, and the first model's per-perturbation mAP table as CSV."""

    def draw(folder: str) -> None:
        steps = next(iter(cfg.pipelines.values()))
        normalised = apply_pipeline(table, steps, cfg.control) if steps else table
        colours = {"MoA": cfg.moa_column, "plate": cfg.plate_column, "batch": cfg.batch_column}
        profiles_map(normalised, feature_columns(normalised), colours, folder, seed=cfg.seed)
        if first["replicate_maps"]:
            map_vs_pvalue(first["replicate_maps"], cfg.threshold, folder)
            pd.DataFrame(first["replicate_maps"]).to_csv(f"{folder}/map_replicates.csv", index=False)
        if attribution is not None:
            channel_bars(attribution["overall"], attribution["per_perturbation"], folder)

    return draw


@register_protocol(PROTOCOL)
class Profiling:
    """Profiling metrics of a profiles table over normalisation pipelines (``configs/evaluate/profiling.yaml``)."""

    Config = ProfilingConfig
    run = staticmethod(run_profiling)
