"""results.json / results.md: one shape for every protocol, published atomically with the pictures."""

import json

import pytest

from sslray import storage
from sslray.evaluate.metrics import summarise
from sslray.evaluate.results import lineage_tags, publish_results, results_document, results_markdown
from sslray.stage import StageRun


def _doc():
    models = {"abmil": {"auc": summarise([0.9, 0.8], ci95=(0.7, 0.95)), "balanced_accuracy": summarise([0.8, 0.7]),
                        "best_params": [{"lr": 1e-3}]},
              "mean_pool": {"auc": summarise([0.7, float("nan")]), "best_params": []}}
    return results_document("mil", "n_bags", 40, models, folds={"scheme": "nested"})


def test_the_document_and_its_table():
    doc = _doc()
    assert doc["protocol"] == "mil" and doc["n_bags"] == 40 and doc["models"]["abmil"]["auc"]["folds"] == [0.9, 0.8]
    table = results_markdown(doc)
    assert "| abmil | 0.850 ± 0.071 [0.700, 0.950] | 0.750 ± 0.071 |" in table
    assert "| mean_pool | 0.700 ± 0.000 | n/a |" in table
    with pytest.raises(ValueError, match="count_key"):
        results_document("mil", "n_rows", 1, {})


def test_publishing_writes_json_without_nan_markdown_and_pictures_then_replaces_only_its_own(tmp_path):
    url = str(tmp_path / "results" / "mil" / "ssl")

    def pictures(folder):
        (tmp_path / "drawn").write_text("x")
        with open(f"{folder}/roc.png", "wb") as handle:
            handle.write(b"png")

    publish_results(_doc(), url, StageRun(None, None), pictures)
    written = json.loads((tmp_path / "results/mil/ssl/results.json").read_text())
    assert written["models"]["mean_pool"]["auc"]["folds"] == [0.7, None]  # NaN is null in JSON
    assert (tmp_path / "results/mil/ssl/results.md").read_text().startswith("# mil (bags: 40)")
    assert (tmp_path / "results/mil/ssl/roc.png").read_bytes() == b"png"
    assert storage.artifact_kind(url) == "evaluation"
    publish_results(_doc(), url, StageRun(None, None))  # a rerun replaces its own results
    assert not (tmp_path / "results/mil/ssl/roc.png").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(storage.OutputError):
        publish_results(_doc(), str(mine), StageRun(None, None))
    assert (mine / "notes.txt").read_text() == "keep"


def test_lineage_tags_come_from_the_embeddings_record(tmp_path):
    table = tmp_path / "emb"
    table.mkdir()
    storage.mark_complete(str(table), {"kind": "embeddings", "checkpoint": "s3://b/ckpt", "store": "/data/store"})
    tags = lineage_tags(str(table))
    assert tags["sslray.checkpoint"] == "s3://b/ckpt" and tags["sslray.store"] == "/data/store"
    assert lineage_tags(str(tmp_path / "plain")) == {"sslray.embeddings": str(tmp_path / "plain")}
