"""The one lifecycle every stage runs through: config -> tracked run -> published URL.

A stage (ingest, pretrain, embed, evaluate, aggregate, and the stages still to come) opens its
MLflow run with ``tracked_run`` and writes its output through ``publishing``; neither wiring is
copied into the stage. A pipeline (the quickstart, a submitted job that runs several stages)
opens a parent run with ``pipeline_run``: every stage run inside it is nested under it, also in
another process, because the parent travels in ``SSLRAY_PARENT_RUN_ID`` next to
``MLFLOW_TRACKING_URI`` (docs/architecture.md).

Run names are ``"<stage> <input>"`` (``embed ssl``, ``evaluate random_init``), so a pipeline's
runs can be told apart; tags ``sslray.stage`` and ``sslray.input`` say the same to a search.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sslray import storage, tracking
from sslray.tracking import TrackingConfig

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "SSLRAY_PARENT_RUN_ID"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nested-run tag: the UI folds children under it


@dataclass
class StageRun:
    """An open MLflow run, logged to by id (from any process); a stage without tracking gets one
    with ``run_id`` None whose calls do nothing."""

    uri: str | None
    run_id: str | None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.run_id:
            tracking.log_metrics(self.uri, self.run_id, metrics, step)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id:
            tracking.set_tags(self.uri, self.run_id, tags)

    def log_json(self, data: Any, artifact_file: str) -> None:
        if self.run_id:
            tracking.log_json(self.uri, self.run_id, data, artifact_file)

    def log_files(self, local_dir: str, artifact_path: str | None = None) -> None:
        if self.run_id:
            tracking.log_files(self.uri, self.run_id, local_dir, artifact_path)


@dataclass
class Publication:
    """An output being written: the stage writes under ``staging`` and fills ``info`` (the
    ``_SUCCESS`` record); ``publishing`` moves it to ``url`` when the block ends."""

    url: str
    staging: str
    info: dict[str, Any] = field(default_factory=dict)


def run_name(stage: str, input_name: str) -> str:
    return f"{stage} {input_name}".strip()


def input_name(url: str) -> str:
    """The last path element of a URL: what a run name calls its input (``embeddings/ssl`` -> ``ssl``)."""
    return url.rstrip("/").rsplit("/", 1)[-1]


@contextmanager
def tracked_run(cfg: TrackingConfig | None, run_dir: str | None, *, stage: str, input: str,
                config: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
                resume_marker: str | None = None) -> Iterator[StageRun]:
    """Open the stage's run (nested under an active parent), log its config redacted, and mark
    it FINISHED or FAILED when the block ends.

    ``cfg`` None is a stage without tracking settings (ingest): it is tracked only inside a
    pipeline. ``resume_marker`` is a JSON file naming the run: a resubmitted job that finds it
    logs on into that run instead of opening another one.
    """
    run = _open(cfg, run_dir, stage, input, config, tags or {}, resume_marker)
    try:
        yield run
    except BaseException:
        _close(run, "FAILED")
        raise
    _close(run, "FINISHED")


@contextmanager
def pipeline_run(cfg: TrackingConfig, run_dir: str, *, name: str, input: str,
                 config: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> Iterator[StageRun]:
    """A run holding several stages: while the block runs, every ``tracked_run`` (in this process
    or a child started from it) is nested under it."""
    with tracked_run(cfg, run_dir, stage=name, input=input, config=config, tags=tags) as run:
        saved = {key: os.environ.get(key) for key in (PARENT_RUN_ENV, "MLFLOW_TRACKING_URI")}
        os.environ.update({PARENT_RUN_ENV: run.run_id, "MLFLOW_TRACKING_URI": run.uri})
        try:
            yield run
        finally:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


@contextmanager
def publishing(url: str, *, kind: str, what: str, overwrite: bool = False, resumable: bool = False,
               keep_partial: bool = False) -> Iterator[Publication]:
    """Write an output atomically: the destination rules of docs/security.md are checked first,
    the output is built in staging, and published only if the block succeeds. On failure the
    staging is removed and the destination is left as it was.

    ``resumable``: the staging location is fixed and kept on failure, so a rerun of the same
    job finds what this one finished (ingest's parts, embed's partitions) and goes on from it;
    ``keep_partial`` keeps that state even with ``overwrite`` (the caller knows it is the same job's).
    """
    if resumable:
        staging = storage.begin_resumable_output(url, overwrite, what=what, kind=kind, keep_partial=keep_partial)
    else:
        staging = storage.begin_output(url, overwrite, what=what, kind=kind)
    publication = Publication(url, staging)
    try:
        yield publication
    except BaseException:
        if staging != url and not resumable:
            storage.remove(staging)
        raise
    storage.publish_output(staging, url, publication.info)


def parent_run(uri: str) -> str | None:
    """The active pipeline's run, when it lives in the same tracking store as this stage's run."""
    parent = os.environ.get(PARENT_RUN_ENV)
    return parent if parent and os.environ.get("MLFLOW_TRACKING_URI") == uri else None


def _open(cfg: TrackingConfig | None, run_dir: str | None, stage: str, input_label: str,
          config: dict[str, Any] | None, tags: dict[str, str], resume_marker: str | None) -> StageRun:
    uri = _uri(cfg, run_dir)
    if uri is None:
        return StageRun(None, None)
    resumed = _resumed_run(uri, resume_marker)
    if resumed:
        return StageRun(uri, resumed)
    parent = parent_run(uri)
    all_tags = {"sslray.stage": stage, "sslray.input": input_label, **tags, **({PARENT_TAG: parent} if parent else {})}
    experiment = cfg.experiment if cfg else TrackingConfig().experiment
    run_id = tracking.start_run(uri, experiment, run_name(stage, input_label), run_dir, all_tags,
                                experiment_id=tracking.run_experiment(uri, parent) if parent else None)
    if config is not None:
        tracking.log_config(uri, run_id, config)
    if resume_marker:
        storage.write_json(resume_marker, {"run_id": run_id, "uri": tracking.redact(uri)})
    return StageRun(uri, run_id)


def _uri(cfg: TrackingConfig | None, run_dir: str | None) -> str | None:
    if cfg is not None and run_dir is not None:
        return tracking.resolve_uri(cfg, run_dir)
    if os.environ.get(PARENT_RUN_ENV) and os.environ.get("MLFLOW_TRACKING_URI"):
        return tracking.resolve_uri(cfg or TrackingConfig(), run_dir or ".", probe=True)
    return None


def _resumed_run(uri: str, marker: str | None) -> str | None:
    if not marker or not storage.exists(marker):
        return None
    saved = storage.read_json(marker)
    if saved.get("uri") == tracking.redact(uri) and tracking.reopen_run(uri, saved["run_id"]):
        log.info("resuming: logging into MLflow run %s", saved["run_id"])
        return saved["run_id"]
    return None


def _close(run: StageRun, status: str) -> None:
    if run.run_id:
        tracking.end_run(run.uri, run.run_id, status)
