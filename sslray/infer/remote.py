"""Slides and images on object storage (``s3://``), embedded without a local copy of the dataset.

Whole-slide readers (tiffslide, tifffile) seek all over a file, which is slow and fragile over
HTTP range requests, and a slide is read once per embedding job. So each read task copies its
one slide to a temporary local file, tiles it with ingest's readers, and deletes it: a node
never holds more than the slides it is reading, and the dataset stays where it is. Folder and
single-file inputs (the ``files`` layout); a slide list on object storage is not supported yet.
No Ray import.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path, PurePosixPath

from sslray import storage
from sslray.data.sources import SOURCE_SUFFIXES, IngestError, SourceImage


def remote_sources(url: str) -> tuple[str, list[SourceImage]]:
    """(base URL, sources under it): every readable file of a folder, or the one file named.
    A source's ``path`` is its key relative to the base until a read task fetches it."""
    fs, root = storage.filesystem(url)
    if url.lower().endswith(".csv"):
        raise IngestError(f"{url}: a slide list on object storage is not supported; give the folder, or copy the "
                          "CSV next to local slides")
    if fs.isfile(root):
        base, names = url.rsplit("/", 1)[0], [url.rsplit("/", 1)[1]]
    elif fs.isdir(root):
        base = url.rstrip("/")
        prefix = root.rstrip("/") + "/"
        names = sorted(p[len(prefix):] for p in fs.find(root)
                       if PurePosixPath(p).suffix.lower() in SOURCE_SUFFIXES)
    else:
        raise IngestError(f"{url} does not exist")
    return base, [SourceImage(PurePosixPath(name), name) for name in names]  # type: ignore[arg-type]


@contextmanager
def fetched(source: SourceImage, base: str | None) -> Iterator[SourceImage]:
    """The source as a local file for the readers: itself when local, else a temporary copy."""
    if base is None:
        yield source
        return
    fs, path = storage.filesystem(storage.join(base, source.rel))
    with tempfile.TemporaryDirectory(prefix="sslray-slide-") as folder:
        local = os.path.join(folder, PurePosixPath(source.rel).name)
        fs.get(path, local)
        yield replace(source, path=Path(local))
