"""Submitting a stage to a Ray cluster through the Ray Jobs API (``sslray submit``).

A submission is exactly ``ray job submit --working-dir <project> -- python jobs/<stage>.py
ARGS``: the project folder (this checkout, without its virtual environment, outputs and
git data) is uploaded, so the cluster runs the code on this machine, and Ray puts it first
on the job's ``PYTHONPATH``. Only non-secret settings travel with the job (the tracking URI,
the S3 endpoint and region); credentials stay on the cluster's nodes (instance profile,
Kubernetes secret), because a job's runtime environment is readable on the dashboard by
everyone who can reach it.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sslray.credentials import CredentialsError, is_secret, redact_url, refuse_inline_credentials

PROJECT = Path(__file__).resolve().parents[1]
JOBS = PROJECT / "jobs"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # the dashboard, as `ray dashboard cluster.yaml` forwards it
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
                 "AWS_REGION", "SSLRAY_PARENT_RUN_ID")  # the last: a job submitted inside a pipeline nests in its run
UPLOAD_EXCLUDES = [".venv", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache", "sslray-quickstart",
                   "sslray-runs", "runs", "mlruns", "mlartifacts", "*.db", "benchmarks/results"]
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class SubmitError(ValueError):
    """A submission that cannot go: unknown stage, no project folder, cluster unreachable."""


@dataclass
class SubmitConfig:
    stage: str
    args: list[str] = field(default_factory=list)
    address: str | None = None  # default: $RAY_ADDRESS if it is an http(s) URL, else DEFAULT_ADDRESS
    wait: bool = True
    env: dict[str, str] = field(default_factory=dict)  # extra job environment (KEY=VALUE), never secrets
    submission_id: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in stages():
            raise SubmitError(f"unknown stage {self.stage!r}: jobs/ has {', '.join(stages())}")
        secret = sorted(k for k in self.env if is_secret(k))
        if secret:
            raise SubmitError(f"--env {', '.join(secret)}: credentials must not travel with a job (its runtime "
                              "environment is shown on the dashboard); give them to the cluster's nodes instead")
        for key, value in self.env.items():
            _refuse(value, f"--env {key}")
        for i, arg in enumerate(self.args):  # the entrypoint is shown on the dashboard too
            key = re.match(r"[\w.-]+(?==)", arg)
            _refuse(arg, f"job argument {key.group(0) if key else i + 1}")


def _refuse(value: str, where: str) -> None:
    """A URL with user:password@ in it must not reach the dashboard (env, entrypoint) or our prints."""
    try:
        refuse_inline_credentials(value, where)
    except CredentialsError as err:
        raise SubmitError(str(err)) from None


def stages() -> list[str]:
    return sorted(p.stem for p in JOBS.glob("*.py")) if JOBS.is_dir() else []


def resolve_address(address: str | None) -> str:
    """The Jobs API is the dashboard's HTTP address; ``RAY_ADDRESS`` counts when it is one."""
    if address:
        return address
    env = os.environ.get("RAY_ADDRESS", "")
    return env if env.startswith(("http://", "https://")) else DEFAULT_ADDRESS


def runtime_env(cfg: SubmitConfig) -> dict:
    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    for key, value in env_vars.items():  # a URL with user:password in it would show on the dashboard
        _refuse(value, f"${key}")
    return {"working_dir": str(PROJECT), "excludes": UPLOAD_EXCLUDES, "env_vars": {**env_vars, **cfg.env}}


def entrypoint(cfg: SubmitConfig) -> str:
    """``python -P``: the script's folder is not put on ``sys.path``, so ``jobs/profile.py`` never
    shadows the standard library's ``profile`` (which torch imports); sslray comes from the uploaded
    working directory, which Ray puts on ``PYTHONPATH``."""
    return shlex.join(["python", "-P", f"jobs/{cfg.stage}.py", *cfg.args])


def submit(cfg: SubmitConfig) -> int:
    """Submit; with ``wait``, stream the job's logs and return 0 only if it succeeded."""
    if not JOBS.is_dir():
        raise SubmitError(f"{JOBS} not found: sslray submit uploads a checkout of the project (git clone + pip "
                          "install -e .)")
    client = _client(resolve_address(cfg.address))
    job_id = client.submit_job(entrypoint=entrypoint(cfg), runtime_env=runtime_env(cfg),
                               submission_id=cfg.submission_id, metadata={"sslray.stage": cfg.stage})
    print(f"submitted {cfg.stage} as job {job_id} to {redact_url(client.get_address())}", file=sys.stderr, flush=True)
    if not cfg.wait:
        print(job_id)
        return 0
    try:
        status = follow(client, job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job keeps running: ray job stop {job_id}  (or ray job logs -f {job_id})",
              file=sys.stderr)
        return 130
    info = client.get_job_info(job_id)
    print(f"job {job_id}: {status}{': ' + info.message if info.message and status != 'SUCCEEDED' else ''}",
          file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def follow(client, job_id: str) -> str:
    """Stream the job's logs to stdout until it ends; its final status."""
    import asyncio

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(tail())
    status = client.get_job_status(job_id).value
    while status not in FINAL:  # the log stream can close a moment before the status is final
        time.sleep(0.5)
        status = client.get_job_status(job_id).value
    return status


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except ConnectionError as err:
        raise SubmitError(f"cannot reach the Ray Jobs API at {redact_url(f'{address}: {err}')}. Start a port-forward "
                          "(`ray dashboard cluster/aws.yaml` or `kubectl port-forward svc/sslray-head-svc 8265`) "
                          "or pass --address") from None
