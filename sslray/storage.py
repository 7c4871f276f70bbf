"""One way to touch files: local paths, ``file://`` and ``s3://`` URLs through fsspec.

S3 endpoint and credentials come from the standard AWS environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``...) or ``~/.aws``; sslray never puts them in configs, logs or MLflow.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

SUCCESS_MARKER = "_SUCCESS"


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def local_path(url: str) -> str:
    """``file:///a/b`` or ``a/b`` -> an absolute local path; remote URLs pass through."""
    url = str(url)
    if url.startswith("file://"):
        url = url[len("file://"):]
    return url if is_remote(url) else os.path.abspath(os.path.expanduser(url))


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(local_path(url))
    return fs, path


def join(url: str, *parts: str) -> str:
    return "/".join([str(url).rstrip("/"), *[p.strip("/") for p in parts]])


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url} does not exist")
    with fs.open(path, "rb") as handle:
        return handle.read()


def write_bytes(url: str, data: bytes, durable: bool = True) -> None:
    """Write a file so readers see either nothing or all of it.

    Locally: write a sibling temp file and rename (atomic on POSIX); ``durable`` also
    fsyncs it, so it survives a power cut, not just a killed process. On object storage a
    PUT is already all-or-nothing.
    """
    fs, path = filesystem(url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if is_remote(url):
        with fs.open(path, "wb") as handle:
            handle.write(data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(url: str, obj: Any) -> None:
    write_bytes(url, json.dumps(obj, indent=2, sort_keys=True).encode())


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


def mark_complete(url: str, info: dict[str, Any]) -> None:
    """Publish a directory-shaped output: readers trust only directories with the marker."""
    write_json(join(url, SUCCESS_MARKER), info)


def is_complete(url: str) -> bool:
    return exists(join(url, SUCCESS_MARKER))


def remove(url: str) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def begin_output(url: str, overwrite: bool = False, what: str = "output") -> str:
    """Where to write a directory-shaped output before publishing it with ``publish_output``.

    Local outputs are built in a hidden sibling directory and renamed into place, so a
    reader never sees half of one. Remote outputs are written in place (object stores
    have no rename) and only count once ``_SUCCESS`` exists.
    """
    if exists(url) and is_complete(url) and not overwrite:
        raise FileExistsError(f"{what} {url} already exists; pass overwrite=true (--overwrite) to replace it")
    if is_remote(url):
        remove(url)
        return url
    final = local_path(url)
    parent, name = os.path.split(final)
    os.makedirs(parent, exist_ok=True)
    return os.path.join(parent, f".{name}.partial-{uuid.uuid4().hex[:8]}")


def begin_resumable_output(url: str, overwrite: bool = False, what: str = "output") -> str:
    """Like ``begin_output``, but the staging location is fixed, so a rerun finds what an
    interrupted run left there. ``overwrite`` also discards that partial state."""
    if is_complete(url) and not overwrite:
        raise FileExistsError(f"{what} {url} already exists; pass overwrite=true (--overwrite) to replace it")
    if is_remote(url):
        staging = url
    else:
        parent, name = os.path.split(local_path(url))
        os.makedirs(parent, exist_ok=True)
        staging = os.path.join(parent, f".{name}.partial")
    if overwrite:
        remove(staging)
    return staging


def publish_output(staging: str, url: str, info: dict[str, Any]) -> None:
    """Write the marker, then (locally) swap the staging directory into place."""
    mark_complete(staging, info)
    if staging == url:
        return
    import shutil

    final = local_path(url)
    if os.path.exists(final):
        trash = f"{final}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        os.rename(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(staging, final)
