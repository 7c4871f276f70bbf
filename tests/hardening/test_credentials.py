"""No credential is ever printed or recorded; a dead tracking server fails fast (issue 11, docs/security.md).

Inline ``user:password@`` in any URL sslray takes is refused before any work, with the URL
redacted in the message; MLflow's basic auth comes from MLFLOW_TRACKING_USERNAME/PASSWORD.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from sslray import tracking
from sslray.cli import main
from sslray.credentials import CredentialsError, inline_credentials, redact, redact_url
from tests.conftest import ROOT, write_png
from tests.servers import free_port

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS-style: holds "/"
KEY = "AKIAIOSFODNN7EXAMPLE"
S3_URL = f"s3://{KEY}:{SECRET}@bucket/stores/x"


@pytest.fixture(autouse=True)
def no_ambient_tracking(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_refused(code: int, text: str, where: str) -> None:
    assert code == 2, text
    assert SECRET not in text and KEY not in text, text
    assert f"{where}:" in text and "carries credentials" in text and "<redacted>@" in text, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text


def test_tracking_uri_with_a_password_is_refused(capsys, tmp_path):
    code, text = run_cli(capsys, "evaluate", "--embeddings", str(tmp_path / "emb"),
                         f"tracking.uri=http://sslray:{SECRET}@127.0.0.1:5000")
    assert_refused(code, text, "tracking.uri")
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in text


def test_env_tracking_uri_with_a_password_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://sslray:{SECRET}@mlflow.internal")
    code, text = run_cli(capsys, "evaluate", "--embeddings", str(tmp_path / "emb"))
    assert_refused(code, text, "$MLFLOW_TRACKING_URI")


@pytest.mark.parametrize("argv, where", [
    (["pretrain", f"store={S3_URL}"], "store"),
    (["embed", "--checkpoint", "ckpt", "--store", S3_URL, "--out", "emb"], "store"),
    (["embed", "--checkpoint", f"s3://{KEY}:{SECRET}@b/ckpt", "--store", "s", "--out", "emb"], "checkpoint"),
    (["evaluate", "--embeddings", S3_URL], "embeddings"),
    (["aggregate", "--embeddings", "emb", "--out", S3_URL], "out"),
])
def test_storage_url_with_a_secret_is_refused(capsys, argv, where):
    code, text = run_cli(capsys, *argv)
    assert_refused(code, text, where)
    assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in text


def test_ingest_destination_with_a_secret_is_refused(capsys, tmp_path):
    write_png(tmp_path / "src" / "a" / "x.png", np.zeros((64, 64), dtype=np.uint8))
    code, text = run_cli(capsys, "ingest", str(tmp_path / "src"), S3_URL, "--tile-size", "32", "--workers", "0")
    assert_refused(code, text, "out")  # named by its config key, as in every stage


def test_submit_never_sends_a_secret_to_the_dashboard(capsys, monkeypatch):
    code, text = run_cli(capsys, "submit", "pretrain", f"store={S3_URL}")
    assert_refused(code, text, "job argument store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://u:{SECRET}@mlflow:5000")
    from sslray.submit import SubmitConfig, SubmitError, runtime_env

    with pytest.raises(SubmitError, match=r"\$MLFLOW_TRACKING_URI: http://<redacted>@mlflow:5000") as err:
        runtime_env(SubmitConfig(stage="pretrain"))
    assert SECRET not in str(err.value)


def test_unreachable_server_fails_fast_in_one_line(capsys, tmp_path):
    port = free_port()  # bound then closed: connection refused
    started = time.perf_counter()
    code, text = run_cli(capsys, "evaluate", "--embeddings", str(tmp_path / "emb"),
                         f"tracking.uri=http://127.0.0.1:{port}")
    assert time.perf_counter() - started < 5
    assert code == 2 and len(text.strip().splitlines()) == 1, text
    assert f"tracking server http://127.0.0.1:{port} is unreachable (connection refused)" in text


def test_pretrain_reports_a_dead_server_before_ray_starts(tmp_path):
    """The real entry point: one line, no traceback, no local Ray started, in seconds."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sslray.cli", "pretrain", f"store={tmp_path / 'none'}",
                           f"run_dir={tmp_path / 'out'}"], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    seconds = time.perf_counter() - started
    print(f"dead tracking server reported in {seconds:.1f} s (process start included)")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"sslray pretrain: error: tracking server http://127.0.0.1:{port} is unreachable "
                                   "(connection refused); start it, or point tracking.uri / MLFLOW_TRACKING_URI at a "
                                   "running server"), proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr and seconds < 60


def test_a_server_that_never_answers_times_out():
    with socket.socket() as listener:  # accepts connections (backlog) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.perf_counter()
        with pytest.raises(tracking.TrackingUnreachable, match=r"unreachable \(no answer within 0.5 s\)"):
            tracking.check_reachable(uri, timeout=0.5)
        assert time.perf_counter() - started < 3


class FakeMlflow(BaseHTTPRequestHandler):
    """Just enough of the MLflow REST API for get-by-name, update and get of one run; records auth."""

    seen: list[str] = []
    RUN = {"info": {"run_id": "r1", "experiment_id": "1", "run_name": "probe", "status": "FINISHED",
                    "lifecycle_stage": "active", "user_id": "u", "start_time": 0, "artifact_uri": "x"}, "data": {}}

    def _answer(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        path = self.path.split("?")[0]
        body = {"/health": "OK", "/api/2.0/mlflow/runs/get": {"run": self.RUN},
                "/api/2.0/mlflow/experiments/get-by-name": {"experiment": {
                    "experiment_id": "1", "name": "sslray", "lifecycle_stage": "active"}}}.get(path, {})
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeMlflow.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_basic_auth_comes_from_env_and_is_never_printed(fake_server, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "sslray")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    uri = tracking.resolve_uri(tracking.TrackingConfig(uri=fake_server), str(tmp_path))  # probes the server
    assert tracking.get_experiment_id(uri, "sslray", None) == "1"
    tracking.end_run(uri, "r1")  # MLflow prints its "View run ... at: URL" line here
    text = capsys.readouterr().out
    assert f"View run probe at: {fake_server}/#/experiments/1/runs/r1" in text
    expected = "Basic " + base64.b64encode(f"sslray:{SECRET}".encode()).decode()
    assert expected in FakeMlflow.seen  # MLflow sent the env credentials...
    assert SECRET not in text and SECRET not in tracking.ui_hint(uri)  # ...and nothing shows them


def test_redaction_of_urls_and_params():
    assert redact_url(S3_URL) == "s3://<redacted>@bucket/stores/x"
    assert redact_url("http://h:5000/?token=abc&x=1") == "http://h:5000/?token=<redacted>&x=1"
    assert redact_url("see https://b/x?sv=1&sig=ABC and s3://K@b") == "see https://b/x?sv=1&sig=<redacted> and s3://<redacted>@b"
    for plain in ("http://h:5000/a@b", "sqlite:////home/a@b/mlflow.db", "s3://bucket/a:b@c", "/data/x:y@z"):
        assert redact_url(plain) == plain and not inline_credentials(plain)
    assert inline_credentials("http://u:12345@h") and inline_credentials(S3_URL)
    params = redact({"store": S3_URL, "tracking": {"uri": "http://h:5000?api_key=k1"}, "password": "p",
                     "storage_options": {"key": KEY, "secret": SECRET}})
    assert KEY not in repr(params) and SECRET not in repr(params) and "k1" not in repr(params)
    assert tracking.ui_hint("http://h:5000/?token=abc").startswith("open http://h:5000/?token=<redacted> in a browser")


def test_library_callers_are_refused_too(tmp_path):
    from sslray import storage

    with pytest.raises(CredentialsError, match="tracking.uri: postgresql://<redacted>@db/mlflow.*PGPASSWORD"):
        tracking.resolve_uri(tracking.TrackingConfig(uri=f"postgresql://mlflow:{SECRET}@db/mlflow"), str(tmp_path))
    with pytest.raises(CredentialsError, match=r"URL: s3://<redacted>@bucket/stores/x"):
        storage.exists(S3_URL)


def test_quickstart_checks_tracking_before_the_ingest(capsys, tmp_path):
    port = free_port()
    code, text = run_cli(capsys, "quickstart", "--out", str(tmp_path / "qs"), f"tracking.uri=http://127.0.0.1:{port}")
    assert code == 2 and f"tracking server http://127.0.0.1:{port} is unreachable" in text, text
    code, text = run_cli(capsys, "quickstart", "--out", str(tmp_path / "qs"), f"tracking.uri=http://u:{SECRET}@h:5000")
    assert_refused(code, text, "tracking.uri")
    assert not any(p.name.startswith("store") for p in (tmp_path / "qs").iterdir())  # nothing was ingested
