"""Training survives a killed worker: Ray Train restarts it from the last checkpoint."""

import glob
import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import pytest

from sslray.config import from_dict
from sslray.train.checkpoint import load_encoder
from sslray.train.config import PretrainConfig
from sslray.train.driver import run_pretrain

pytestmark = pytest.mark.ray


def _own_raylet_pid(ray) -> int:
    """The raylet of this test session's Ray: its workers are its children (one task asks)."""
    return ray.get(ray.remote(lambda: int(os.environ.get("RAY_RAYLET_PID") or os.getppid())).remote())


def _parent_pid(pid: str) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), None)


def _train_worker_pids(raylet: int) -> list[int]:
    """Ray Train worker processes of this session's raylet, found by the process title Ray gives them
    (other Ray sessions on a shared machine have theirs too: those are left alone)."""
    pids = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        pid = cmdline.split("/")[2]
        try:
            text = Path(cmdline).read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "RayTrainWorker" in text and _parent_pid(pid) == raylet:
            pids.append(int(pid))
    return pids


def _kill_after_two_checkpoints(root: Path, raylet: int, killed: list[int], deadline: float = 300) -> None:
    """The second checkpoint's folder appearing means the first one is registered."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if len(glob.glob(str(root / "checkpoint_*"))) >= 2 and (pids := _train_worker_pids(raylet)):
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
            return
        time.sleep(0.05)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds worker processes through /proc")
def test_sigkilled_worker_resumes_from_its_last_checkpoint(ray_session, tiny_store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    steps, every, log_every = 120, 10, 5
    cfg = from_dict(PretrainConfig, {
        "store": tiny_store.url, "run_dir": str(out), "name": "faults",
        "model": {"name": "vit_tiny_patch16_224",
                  "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}},
        "method": {"name": "dino", "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
                   "views": {"global_size": 32, "local_size": 16, "n_local": 2}},
        "train": {"steps": steps, "batch_size": 16, "cpus_per_worker": 1.0, "log_every": log_every,
                  "checkpoint_every": every, "max_failures": 2},
    })
    killed: list[int] = []
    killer = threading.Thread(target=_kill_after_two_checkpoints, args=(out / "checkpoints" / "faults", _own_raylet_pid(ray_session), killed))
    killer.start()
    result = run_pretrain(cfg)
    killer.join()
    assert killed, "no training worker was found to kill"
    assert result.steps == steps
    _, meta = load_encoder(result.checkpoint)
    assert meta.step == steps  # the final model loads, and it is the last step's

    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs(client.get_experiment_by_name("sslray").experiment_id)
    assert run.info.run_name == "pretrain faults" and run.info.status == "FINISHED"
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert set(logged) == set(range(log_every, steps + 1, log_every))  # no gap
    repeated = {s for s in logged if logged.count(s) > 1}
    assert repeated, "the worker was killed but no step was redone: did it restart?"
    # only steps after a checkpoint are redone: the restart did not go back to step 0
    assert min(repeated) > every


_JOB = """
import json, sys
from sslray.config import from_dict
from sslray.train.config import PretrainConfig
from sslray.train.driver import run_pretrain
run_pretrain(from_dict(PretrainConfig, json.loads(sys.argv[1])))
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="kills processes by pid")
def test_killed_job_resubmitted_with_the_same_name_resumes_in_the_same_mlflow_run(ray_session, tiny_store, tmp_path,
                                                                                  monkeypatch):
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    steps, every, log_every = 120, 10, 5
    config = {
        "store": tiny_store.url, "run_dir": str(out), "name": "resubmit",
        "model": {"name": "vit_tiny_patch16_224",
                  "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}},
        "method": {"name": "dino", "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
                   "views": {"global_size": 32, "local_size": 16, "n_local": 2}},
        "train": {"steps": steps, "batch_size": 16, "cpus_per_worker": 1.0, "log_every": log_every,
                  "checkpoint_every": every},
    }
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    job = subprocess.Popen([sys.executable, "-c", _JOB, json.dumps(config)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = out / "checkpoints" / "resubmit"
    try:
        end = time.monotonic() + 300
        while len(glob.glob(str(checkpoints / "checkpoint_*"))) < 2:
            assert job.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < end
            time.sleep(0.05)
        job.send_signal(signal.SIGKILL)
        job.wait()
    finally:
        if job.poll() is None:
            job.kill()
    first_run = json.loads((checkpoints / "mlflow_run.json").read_text())["run_id"]
    # what a kill during a checkpoint upload leaves: a newer folder, half written, never registered
    partial = checkpoints / "checkpoint_2999-01-01_00-00-00.000000"
    partial.mkdir()
    (partial / "train_state.pt").write_bytes(b"cut short")

    result = run_pretrain(from_dict(PretrainConfig, config))  # resubmitted: same run_dir, same name
    assert result.steps == steps and result.run_id == first_run
    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    runs = client.search_runs(client.get_experiment_by_name("sslray").experiment_id)
    assert [r.info.run_id for r in runs] == [first_run] and runs[0].info.status == "FINISHED"
    logged = [m.step for m in client.get_metric_history(first_run, "loss")]
    assert set(logged) == set(range(log_every, steps + 1, log_every))  # no gap
    repeated = {s for s in logged if logged.count(s) > 1}
    assert not repeated or min(repeated) > every  # resumed from a checkpoint, not from step 0
    assert logged.index(steps) > logged.index(every)  # the resubmitted run logged the end
    assert load_encoder(result.checkpoint)[1].step == steps and "2999" not in result.checkpoint
