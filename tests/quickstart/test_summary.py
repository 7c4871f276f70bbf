"""summary.json keeps the README's shape; the dataclass reads it back and redacts the tracking URI."""

import json

from sslray.quickstart import ProbeScores, QuickstartSummary


def _summary(**changes) -> QuickstartSummary:
    fields = dict(model="ssl", scores=ProbeScores(0.547, 0.773), baseline="random_init",
                  baseline_scores=ProbeScores(0.234, 0.515), tracking_uri="sqlite:///qs/mlflow.db", n_tiles=768,
                  method="dino", checkpoint="qs/checkpoints/x", steps=640, seconds=286.0)
    return QuickstartSummary(**(fields | changes))


def test_summary_json_has_the_keys_the_readme_shows(tmp_path):
    _summary().write(tmp_path / "summary.json")
    data = json.loads((tmp_path / "summary.json").read_text())
    assert list(data) == ["ssl", "random_init", "tracking_uri", "n_tiles", "method", "checkpoint", "steps", "seconds"]
    assert data["ssl"] == {"balanced_accuracy": 0.547, "macro_auc": 0.773}
    assert QuickstartSummary.read(tmp_path / "summary.json") == _summary()


def test_the_baseline_keeps_its_own_name():
    data = _summary(model="aggregator", baseline="mean_pooling").to_json()
    assert {"aggregator", "mean_pooling"} <= set(data) and "ssl" not in data


def test_tracking_uri_is_redacted():
    summary = _summary(tracking_uri="http://u:secret@mlflow:5000")
    assert "secret" not in summary.tracking_uri and "secret" not in json.dumps(summary.to_json())


def test_headline_compares_the_model_with_its_baseline():
    assert _summary().headline() == ("linear probe balanced accuracy: ssl 0.547 vs random_init 0.234 "
                                     "(macro AUC 0.773 vs 0.515)")


def test_the_mil_scores_round_trip_and_join_the_headline(tmp_path):
    mil = {"ssl": {"abmil/auc": 0.9, "mean_pool/auc": 0.8}, "random_init": {"abmil/auc": 0.6, "mean_pool/auc": 0.55}}
    summary = _summary(mil=mil)
    summary.write(tmp_path / "summary.json")
    assert QuickstartSummary.read(tmp_path / "summary.json") == summary
    assert json.loads((tmp_path / "summary.json").read_text())["mil"] == mil
    assert summary.headline().endswith("slide-level MIL AUC: abmil 0.900 vs 0.600, mean_pool 0.800 vs 0.550")
    assert "mil" not in _summary().to_json()
