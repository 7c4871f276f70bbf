from sslray.tracking import REDACTED, TrackingConfig, redact, resolve_uri


def test_credentials_never_reach_params():
    cfg = {"store": "s3://AKIAXXX:supersecret@host/bucket", "storage_options": {"secret_key": "s", "key": "k",
           "aws_access_key_id": "a", "endpoint_url": "http://127.0.0.1:9000"}, "token": "t", "lr": 0.1}
    safe = redact(cfg)
    text = repr(safe)
    assert "supersecret" not in text and "AKIAXXX" not in text
    assert safe["storage_options"]["secret_key"] == REDACTED and safe["token"] == REDACTED
    assert safe["storage_options"]["aws_access_key_id"] == REDACTED and safe["storage_options"]["key"] == REDACTED
    assert safe["storage_options"]["endpoint_url"] == "http://127.0.0.1:9000" and safe["lr"] == 0.1


def test_embedded_default_is_sqlite_under_out(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(TrackingConfig(), str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # nothing listens: no probe here
    assert resolve_uri(TrackingConfig(), str(tmp_path), probe=False) == "http://127.0.0.1:5000"
    assert resolve_uri(TrackingConfig(uri="http://x:1"), str(tmp_path), probe=False) == "http://x:1"


def test_the_ui_hint_opens_the_runs_view_not_the_genai_view():
    from sslray.tracking import ui_hint

    local = ui_hint("sqlite:////runs/mlflow.db")
    assert local.startswith("mlflow ui --backend-store-uri sqlite:////runs/mlflow.db, then open http://127.0.0.1:5000/")
    assert local.endswith("#/experiments?workflowType=machine_learning")
    assert "#/experiments?workflowType=machine_learning" in ui_hint("http://mlflow:5000")
