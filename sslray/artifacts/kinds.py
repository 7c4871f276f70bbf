"""Artifact kinds: what a reader finds at a URL, and one clear refusal when it is not what the stage reads.

Every stage reads an artifact another stage published: a tile store (``store=``,
``sslray store info|verify``), an embeddings table (``--embeddings``), a spot table. Handed
the wrong thing, a reader used to fail deep inside zarr or pyarrow ("Could not read schema
from checksums.json") or blame an interrupted ingest for a path that simply does not exist.
``require_artifact`` tells the cases apart: nothing there, a file, a folder sslray did not
write (a plain image folder), another kind of artifact, an unfinished one.

Finished artifacts are recognised by ``storage.artifact_kind`` (the kind recorded in
``_SUCCESS``); unfinished ones by the writing marker or by their files, so outputs written
before either marker existed are still named correctly.
"""

from __future__ import annotations

from sslray import storage

NAMES = {"tile_store": "tile store", "embeddings": "embeddings table", "spot_table": "spot table",
         "checkpoint": "checkpoint", "profiles": "profiles table", "explanations": "explanations folder"}
MAKE = {
    "tile_store": "`sslray ingest SRC DEST` makes one from a folder of images",
    "embeddings": "`sslray embed --checkpoint CKPT --store STORE --out DEST` makes one from a tile store",
    "spot_table": "`sslray aggregate --embeddings TABLE --out DEST` makes one from an embeddings table",
    "profiles": "`sslray profile --embeddings TABLE --out DEST` makes one from an embeddings table",
    "explanations": "`sslray explain --checkpoint CKPT --store STORE --out DEST` makes one from a checkpoint",
}
LOOKS_FOR = {
    "tile_store": "no tiles.zarr / manifest.parquet; did you mean to `sslray ingest` it?",
    "embeddings": "no parquet files with an 'embedding' column; did you mean to `sslray embed` a tile store?",
    "spot_table": "no parquet files with an 'embedding' column",
    "profiles": "no profiles.parquet",
    "explanations": "no index.json",
}
RERUN = {"tile_store": "an ingest was interrupted or is still running; run the ingest again",
         "embeddings": "an embed was interrupted or is still running; run `sslray embed` again",
         "spot_table": "an aggregate was interrupted or is still running; run `sslray aggregate` again",
         "profiles": "a profile was interrupted or is still running; run `sslray profile` again",
         "explanations": "an explain was interrupted or is still running; run `sslray explain` again"}
PROBE_TABLES = ("embeddings", "spot_table")  # tables of vectors `sslray evaluate` probes
TILE_STORE_FILES = {"tiles.zarr", "manifest.parquet", "_ingest"}
CHECKPOINT_FILES = {"sslray.json", "encoder.safetensors"}


def describe(kind: str) -> str:
    """``tile_store`` -> ``a tile store`` (for messages)."""
    name = NAMES.get(kind, f"sslray {kind.replace('_', ' ')}")
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def require_artifact(url: str, kinds: tuple[str, ...], missing: type[Exception] = FileNotFoundError,
                     wrong: type[Exception] = ValueError) -> None:
    """Return when ``url`` is a finished artifact of one of ``kinds``; otherwise raise ``missing``
    (nothing there, or unfinished) or ``wrong`` (something else is there), saying which and what to do."""
    found = storage.artifact_kind(url) or _finished_by_files(url)
    if found in kinds:
        return
    want = kinds[0]
    if found is not None:
        raise wrong(f"{url} is {describe(found)}, not {describe(want)}; pass {describe(want)} ({MAKE[want]})")
    unfinished = unfinished_kind(url)
    if unfinished in kinds:
        raise missing(f"{NAMES[want]} {url} is incomplete (no {storage.SUCCESS_MARKER}): {RERUN[unfinished]}")
    if unfinished is not None:
        raise wrong(f"{url} is an unfinished {NAMES.get(unfinished, unfinished)}, not {describe(want)}")
    fs, path = storage.filesystem(url)
    if not fs.exists(path):
        raise missing(f"no {NAMES[want]} at {url} (nothing there: the path does not exist); check the path "
                      f"({MAKE[want]})")
    if not fs.isdir(path):
        raise wrong(f"{url} is a file, not {describe(want)} (a folder); check the path")
    raise wrong(f"{url} is not an sslray {NAMES[want]} ({LOOKS_FOR[want]})")


def unfinished_kind(url: str) -> str | None:
    """The kind of an unfinished sslray output at ``url`` (written in place, as on object storage)
    or in its local resumable staging folder ``.NAME.partial`` beside it; None when there is none."""
    places = [url]
    if not storage.is_remote(url):
        parent, _, name = storage.local_path(url).rpartition("/")
        places.append(f"{parent}/.{name}.partial")
    for place in places:
        names = _names(place)
        if names is None:
            continue
        if storage.WRITING_MARKER in names:
            return storage.writing_kind(place)
        kind = _kind_by_files(place, names)
        if kind is not None:
            return kind
    return None


def _finished_by_files(url: str) -> str | None:
    """Artifacts that are complete without a ``_SUCCESS`` marker: checkpoints (``sslray.json`` last)."""
    names = _names(url)
    return "checkpoint" if names is not None and names >= CHECKPOINT_FILES else None


def _names(url: str) -> set[str] | None:
    """The entry names directly under ``url``; None when it is not a folder."""
    fs, path = storage.filesystem(url)
    if not fs.isdir(path):
        return None
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False, refresh=True)}


def _kind_by_files(url: str, names: set[str]) -> str | None:
    """Tell an unmarked sslray output by what it holds (outputs written before the markers)."""
    if names & TILE_STORE_FILES:
        return "tile_store"
    if "_aggregator" in names:
        return "spot_table"
    parquet = sorted(n for n in names if n.endswith(".parquet"))
    return "embeddings" if parquet and "embedding" in _parquet_columns(storage.join(url, parquet[0])) else None


def _parquet_columns(url: str) -> list[str]:
    """Column names of one parquet file (its footer only); empty when it is not parquet."""
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(url)
    try:
        with fs.open(path, "rb") as handle:
            return pq.read_schema(handle).names
    except (OSError, ValueError):  # pyarrow.ArrowInvalid is a ValueError
        return []
