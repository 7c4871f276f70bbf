"""The one shape every evaluation protocol reports in: ``results.json`` and ``results.md``.

``results.json`` (docs/protocols.md, "Results"): ``{"protocol", "n_bags" or "n_tiles", "models":
{NAME: {METRIC: {"mean", "sd", "folds"[, "ci95"]}, "best_params": ...}}}`` plus what the protocol
adds (the folds design, the classes). Both files are published as one folder
(``<run_dir>/results/<protocol>/<input>``, replaced only by a later run of the same evaluation),
logged to the MLflow run with the pictures, and tagged with the embeddings' lineage. No Ray import.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

from sslray import storage
from sslray.stage import StageRun, publishing

KIND = "evaluation"


def results_document(protocol: str, count_key: str, count: int, models: dict[str, dict], **extra: Any) -> dict:
    if count_key not in ("n_bags", "n_tiles", "n_profiles"):
        raise ValueError(f"count_key must name bags, tiles or profiles, got {count_key!r}")
    return {"protocol": protocol, count_key: int(count), "models": models, **extra}


def results_markdown(doc: dict) -> str:
    """One row per model, one column per metric: ``mean ± sd`` (and the 95% interval when there is one)."""
    metrics = sorted({m for model in doc["models"].values() for m, v in model.items() if _is_metric(v)})
    count = next((f"{k.removeprefix('n_')}: {doc[k]}" for k in ("n_bags", "n_tiles", "n_profiles") if k in doc), "")
    lines = [f"# {doc['protocol']} ({count})", "", "| model | " + " | ".join(metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for name, model in doc["models"].items():
        cells = [_cell(model.get(m)) for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _is_metric(value: Any) -> bool:
    return isinstance(value, dict) and "mean" in value and "folds" in value


def _cell(value: dict | None) -> str:
    if value is None or not math.isfinite(value["mean"]):
        return "n/a"
    text = f"{value['mean']:.3f} ± {value['sd']:.3f}"
    if "ci95" in value:
        text += f" [{value['ci95'][0]:.3f}, {value['ci95'][1]:.3f}]"
    return text


def lineage_tags(embeddings: str) -> dict[str, str]:
    """The embeddings' own lineage (checkpoint, tile store) from its ``_SUCCESS`` record, as run tags."""
    from sslray.credentials import redact_url

    try:
        info = storage.read_json(storage.join(embeddings, storage.SUCCESS_MARKER))
    except (OSError, ValueError):
        info = {}
    tags = {"sslray.embeddings": redact_url(embeddings)}
    for key in ("checkpoint", "store", "source"):
        if isinstance(info, dict) and info.get(key):
            tags[f"sslray.{key}"] = redact_url(str(info[key]))
    return tags


def publish_results(doc: dict, url: str, run: StageRun, pictures: Callable[[str], None] | None = None) -> str:
    """Publish ``results.json``, ``results.md`` and the pictures ``pictures(folder)`` draws at ``url``,
    and log the same files to ``run``; returns ``url``."""
    with publishing(url, kind=KIND, what="evaluation results", overwrite=True) as output, \
            tempfile.TemporaryDirectory() as local:
        _write(local, "results.json", json.dumps(_finite(doc), indent=2, sort_keys=False))
        _write(local, "results.md", results_markdown(doc))
        if pictures is not None:
            pictures(local)
        for name in sorted(os.listdir(local)):
            with open(os.path.join(local, name), "rb") as handle:
                storage.write_bytes(storage.join(output.staging, name), handle.read())
        output.info.update({"protocol": doc["protocol"], "files": sorted(os.listdir(local))})
        run.log_files(local)
    return url


def _write(folder: str, name: str, text: str) -> None:
    with open(os.path.join(folder, name), "w") as handle:
        handle.write(text)


def _finite(value: Any) -> Any:
    """JSON has no NaN: a metric that could not be computed is null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
