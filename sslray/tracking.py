"""MLflow helpers shared by every stage.

Embedded default: a SQLite store under the run's output directory (MLflow 3 refuses a
plain file store), with artifacts next to it. ``MLFLOW_TRACKING_URI`` or a configured URI
switches to a tracking server. Anything that looks like a credential is dropped before it
reaches MLflow: configs can carry storage options, and MLflow params are readable by
everyone with access to the server. A URI with an inline password is refused and a dead
server is reported in one line before a stage starts (docs/security.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslray import storage
from sslray.config import flatten
from sslray.credentials import REDACTED, SECRET_KEYS, SECRET_PATTERN, is_secret, redact, redact_url  # noqa: F401
from sslray.credentials import refuse_inline_credentials

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3's UI opens an experiment by this tag
MODEL_TRAINING = "custom_model_development"  # what the experiment holds: model training runs, not traces
MAX_PARAM_LENGTH = 6000  # MLflow's limit for one param value
PROBE_TIMEOUT_S = 5.0  # one request; MLflow's own client retries a dead server for minutes
_REACHABLE: set[str] = set()  # servers probed from this process


class TrackingUnreachable(ConnectionError):
    """The tracking server did not answer the probe; the message names it (without credentials)."""


@dataclass
class TrackingConfig:
    uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<out>/mlflow.db
    experiment: str = "sslray"


def resolve_uri(cfg: TrackingConfig, out_dir: str, probe: bool = True) -> str:
    """The run's tracking URI: a URI with inline credentials is refused, a dead server reported (``probe``)."""
    storage.check_folder(out_dir, "run directory (run_dir)")
    uri = _configured_uri(cfg, out_dir)
    if probe:
        check_reachable(uri)
    return uri


def check(cfg: TrackingConfig, out_dir: str) -> None:
    """What every stage calls before any work (and before Ray starts): ``resolve_uri``'s refusals
    and probe, without creating the SQLite store's folder yet."""
    storage.check_folder(out_dir, "run directory (run_dir)")
    check_reachable(_configured_uri(cfg, out_dir, create=False))


def _configured_uri(cfg: TrackingConfig, out_dir: str, create: bool = True) -> str:
    if cfg.uri:
        refuse_inline_credentials(cfg.uri, "tracking.uri")
        return cfg.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        refuse_inline_credentials(os.environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI")
        return os.environ["MLFLOW_TRACKING_URI"]
    if storage.is_remote(out_dir):
        raise ValueError(
            f"outputs go to {redact_url(out_dir)} but no tracking server is set: set MLFLOW_TRACKING_URI or "
            "tracking.uri (a SQLite file cannot live on object storage)"
        )
    path = Path(storage.local_path(out_dir))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One short GET of ``<uri>/health``; any HTTP answer (even 401 or 404) means the server is up."""
    if not uri.startswith(("http://", "https://")) or uri in _REACHABLE:
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout, allow_redirects=False)
    except requests.exceptions.SSLError:
        pass  # something answers TLS; MLflow reports certificate problems itself
    except requests.exceptions.RequestException as err:
        raise TrackingUnreachable(
            f"tracking server {redact_url(uri)} is unreachable ({_reason(err, timeout)}); start it, or point "
            "tracking.uri / MLFLOW_TRACKING_URI at a running server") from None
    _REACHABLE.add(uri)


def _reason(err: Exception, timeout: float) -> str:
    import requests

    text = str(err).lower()
    if isinstance(err, requests.exceptions.Timeout):
        return f"no answer within {timeout:g} s"
    if "refused" in text:
        return "connection refused"
    if any(s in text for s in ("name or service not known", "nodename nor servname", "name resolution",
                               "getaddrinfo")):
        return "host name not found"
    return f"cannot connect: {type(err).__name__}"


def get_experiment_id(uri: str, name: str, out_dir: str | None) -> str:
    """The experiment's id, creating it (marked as model training) if it is new; an existing one
    that lacks the mark gets it, so MLflow's UI shows its runs table."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment = client.get_experiment(_create_experiment(client, uri, name, out_dir))
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return experiment.experiment_id


def _create_experiment(client, uri: str, name: str, out_dir: str | None) -> str:
    artifact_location = None
    if uri.startswith("sqlite:") and out_dir is not None:
        artifact_location = Path(storage.local_path(out_dir), "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except Exception:  # created concurrently by another process
        return client.get_experiment_by_name(name).experiment_id


def run_experiment(uri: str, run_id: str) -> str:
    """The experiment a run lives in (a nested run goes into its parent's)."""
    import mlflow

    return mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id


def start_run(uri: str, experiment: str, run_name: str, out_dir: str | None, tags: dict[str, str] | None = None,
              experiment_id: str | None = None) -> str:
    """Create a run and return its id; stages log to it by id, from any process."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment_id = experiment_id or get_experiment_id(uri, experiment, out_dir)
    run = client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()})
    return run.info.run_id


def reopen_run(uri: str, run_id: str) -> bool:
    """Mark an existing run as running again (a resumed job logs on into it); False if it is gone."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    if run.info.lifecycle_stage != "active":
        return False
    client.update_run(run_id, status="RUNNING")
    return True


def log_config(uri: str, run_id: str, config: dict[str, Any]) -> None:
    """The resolved config as params (flattened, redacted) and as ``config.json``."""
    import mlflow
    from mlflow.entities import Param

    safe = redact(config)
    params = [Param(k, _param_value(v)) for k, v in flatten(safe).items()]
    client = mlflow.MlflowClient(uri)
    for i in range(0, len(params), 100):  # MLflow caps a batch at 100 params
        client.log_batch(run_id, params=params[i : i + 100])
    client.log_text(run_id, json.dumps(safe, indent=2, sort_keys=True), "config.json")


def _param_value(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text[:MAX_PARAM_LENGTH]


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    import time

    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
    if batch:
        mlflow.MlflowClient(uri).log_batch(run_id, metrics=batch)


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    import mlflow
    from mlflow.entities import RunTag

    mlflow.MlflowClient(uri).log_batch(run_id, tags=[RunTag(k, str(redact(v))) for k, v in tags.items()])


def log_json(uri: str, run_id: str, data: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.MlflowClient(uri).log_text(run_id, json.dumps(redact(data), indent=2, sort_keys=True), artifact_file)


def log_files(uri: str, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
    """Every file under ``local_dir`` (results, pictures) as artifacts of the run."""
    import mlflow

    mlflow.MlflowClient(uri).log_artifacts(run_id, local_dir, artifact_path)


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    import mlflow

    mlflow.MlflowClient(uri).set_terminated(run_id, status=status)


RUNS_VIEW = "#/experiments?workflowType=machine_learning"  # MLflow 3.17's UI opens on GenAI (traces) without it


def ui_hint(uri: str) -> str:
    """What to run or open to see the runs; the URI is redacted, like everything sslray prints.

    MLflow 3.17's UI picks its view from a sidebar switch remembered by the browser (GenAI by
    default), not from the experiment's kind tag; ``workflowType=machine_learning`` in the
    address selects the runs tables (docs/data_contracts.md)."""
    uri = redact_url(uri)
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/{RUNS_VIEW}"
    return f"open {uri} in a browser ({RUNS_VIEW} shows the runs)"
