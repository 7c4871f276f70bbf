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

from sslray.credentials import refuse_inline_credentials

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
    refuse_inline_credentials(str(url), "URL")  # every file sslray touches comes through here
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


# --- Directory-shaped outputs: never damage what is already at the destination ---------------
#
# The rules (docs/security.md, "Paths"): sslray writes an output only where nothing is, where
# an empty folder is, or where its own unfinished output of the same kind is; it replaces an
# existing output only when that output is a finished sslray artifact of the same kind and
# the user asked for ``overwrite``. A regular file or a folder sslray did not write is never
# replaced or deleted, with or without ``overwrite``.

WRITING_MARKER = "_SSLRAY_WRITING"  # in a staging area: which kind of artifact is being built there
KIND_FILES = (("tiles.zarr", "tile_store"), ("_aggregator", "spot_table"))


class OutputError(FileExistsError):
    """The destination holds something sslray must not replace; the message names it."""


def artifact_kind(url: str) -> str | None:
    """The kind of finished sslray artifact at ``url`` (``tile_store``, ``embeddings``,
    ``spot_table``...), or None when there is none (nothing, a partial output, or not sslray's).

    The kind is recorded in ``_SUCCESS``; outputs published before it was are told by their files.
    """
    marker = join(url, SUCCESS_MARKER)
    if not exists(marker):
        return None
    try:
        info = read_json(marker)
    except ValueError:
        info = {}
    if isinstance(info, dict) and info.get("kind"):
        return str(info["kind"])
    if isinstance(info, dict) and "spot_column" in info:  # spot tables (trained or mean-pooled) record it
        return "spot_table"
    for name, kind in KIND_FILES:
        if exists(join(url, name)):
            return kind
    return "embeddings"  # the only other directory-shaped output sslray has published


def check_destination(url: str, kind: str, what: str, overwrite: bool = False) -> None:
    """Refuse a destination that writing a ``kind`` artifact there could damage (see the rules above)."""
    _check_parents(url, what)
    fs, path = filesystem(url)
    if not fs.exists(path):
        return
    if not fs.isdir(path):
        raise OutputError(f"{what} {url}: a file is there, not a folder; sslray never replaces it. "
                          "Choose another destination")
    found = artifact_kind(url)
    if found is None:
        if _is_own_partial(url, kind) or not fs.ls(path):
            return
        examples = ", ".join(sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path))[:3])
        raise OutputError(f"{what} {url}: the folder exists and is not an sslray {what} (it holds {examples}...); "
                          "sslray never writes into or deletes a folder it did not create, even with --overwrite. "
                          "Choose a new path")
    if found != kind:
        raise OutputError(f"{url} is an sslray {found.replace('_', ' ')}, not a {what}; sslray does not replace it "
                          f"with a {what}, even with --overwrite. Choose another destination")
    if not overwrite:
        raise FileExistsError(f"{what} {url} already exists; pass overwrite=true (--overwrite) to replace it")


def _check_parents(url: str, what: str) -> None:
    """Locally, the nearest existing ancestor must be a folder (else makedirs fails with a raw Errno)."""
    if is_remote(url):
        return
    parent = os.path.dirname(local_path(url))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise OutputError(f"{what} {url}: cannot be created because {parent} is a file, not a folder")


def writing_kind(staging: str) -> str | None:
    """The kind the writing marker in ``staging`` records; None when there is none or it is unreadable."""
    try:
        info = read_json(join(staging, WRITING_MARKER))
    except (OSError, ValueError):
        return None
    return str(info["kind"]) if isinstance(info, dict) and info.get("kind") else None


def _is_own_partial(url: str, kind: str) -> bool:
    """An unfinished output of this kind written in place (object storage) by an earlier run."""
    if exists(join(url, WRITING_MARKER)):
        return writing_kind(url) == kind
    return kind == "tile_store" and exists(join(url, "_ingest", "plan.json"))  # ingests before the marker


def check_folder(url: str, what: str) -> None:
    """A folder-shaped destination such as a run directory (``out``) can be created or reused:
    no file stands at it or above it (which makedirs would report as a bare Errno 17)."""
    _check_parents(url, what)
    fs, path = filesystem(url)
    if fs.exists(path) and not fs.isdir(path):
        raise OutputError(f"{what} {url}: a file is there, not a folder; choose another path")


def ensure_folder(url: str, what: str) -> str:
    """Create a folder-shaped destination (see ``check_folder``); returns its URL."""
    check_folder(url, what)
    fs, path = filesystem(url)
    fs.makedirs(path, exist_ok=True)
    return url


def begin_output(url: str, overwrite: bool = False, what: str = "output", kind: str | None = None) -> str:
    """Where to write a directory-shaped output before publishing it with ``publish_output``.

    Local outputs are built in a hidden sibling directory and renamed into place, so a
    reader never sees half of one. Remote outputs are written in place (object stores
    have no rename) and only count once ``_SUCCESS`` exists.
    """
    kind = kind or what.replace(" ", "_")
    check_destination(url, kind, what, overwrite)
    if is_remote(url):
        _clear_remote(url)
        staging = url
    else:
        parent, name = os.path.split(local_path(url))
        os.makedirs(parent, exist_ok=True)
        staging = os.path.join(parent, f".{name}.partial-{uuid.uuid4().hex[:8]}")
    write_json(join(staging, WRITING_MARKER), {"kind": kind})
    return staging


def begin_resumable_output(url: str, overwrite: bool = False, what: str = "output", kind: str | None = None,
                           keep_partial: bool = False) -> str:
    """Like ``begin_output``, but the staging location is fixed, so a rerun finds what an
    interrupted run left there. ``overwrite`` also discards that partial state, unless
    ``keep_partial`` (the caller has checked it belongs to the same job: resume it, and replace
    only a finished output at ``url``)."""
    kind = kind or what.replace(" ", "_")
    check_destination(url, kind, what, overwrite)
    staging = resumable_staging(url)
    if is_remote(url):
        if overwrite and (not keep_partial or is_complete(url)):
            _clear_remote(url)
    else:
        os.makedirs(os.path.dirname(staging), exist_ok=True)
        if overwrite and not keep_partial:
            remove(staging)
    write_json(join(staging, WRITING_MARKER), {"kind": kind})
    return staging


def resumable_staging(url: str) -> str:
    """Where a resumable output is built: a fixed hidden sibling locally, in place on object storage."""
    if is_remote(url):
        return url
    parent, name = os.path.split(local_path(url))
    return os.path.join(parent, f".{name}.partial")


def _clear_remote(url: str) -> None:
    """Empty a remote destination that ``check_destination`` allowed: the marker goes first, so
    a reader never takes a half-deleted artifact for a finished one."""
    remove(join(url, SUCCESS_MARKER))
    remove(url)


def publish_output(staging: str, url: str, info: dict[str, Any]) -> None:
    """Write the marker (with the artifact's kind), then (locally) swap the staging directory into place.

    The destination is checked again: something may have appeared there while the job ran.
    Only an empty folder or a finished artifact of the same kind is replaced; otherwise the
    finished output stays in ``staging`` and the error says where.
    """
    kind = writing_kind(staging) or info.get("kind")
    mark_complete(staging, {**info, "kind": kind} if kind else info)
    remove(join(staging, WRITING_MARKER))
    if staging == url:
        return
    final = local_path(url)
    try:
        check_destination(url, kind or "", "output", overwrite=True)
    except FileExistsError as err:
        raise OutputError(f"{err}. The finished output was left in {staging}") from None
    if os.path.isdir(final) and not os.listdir(final):
        os.rmdir(final)
    if not os.path.exists(final):
        os.rename(staging, final)
        return
    import shutil

    trash = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.old-{uuid.uuid4().hex[:8]}")
    os.rename(final, trash)
    os.rename(staging, final)
    shutil.rmtree(trash, ignore_errors=True)
