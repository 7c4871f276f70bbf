"""The profiles table: ``Metadata_*`` columns + one numeric column per feature, one row per profile.

This is the shape the profiling field already uses (pycytominer writes it, copairs and
cytominer-eval read it, AnnData takes it as ``obs`` + ``X``), so a table made by ``sslray profile``
and one made by anyone else are read the same way. A column is metadata when its name starts with
``Metadata_``; every other column is a feature and must be numeric, so a stray text column is an
error naming it instead of a silently dropped (or string-compared) feature.

Readers take a parquet file, a folder of parquet parts (an sslray ``profiles`` artifact, whose
``_SUCCESS`` names its kind, or anyone's), or CSV / CSV.gz as pycytominer writes them, from any
URL ``sslray.storage`` opens.
"""

from __future__ import annotations

import io

import pandas as pd

from sslray import storage
from sslray.artifacts.vector_table import read_parquet_dir

META_PREFIX = "Metadata_"
PLATE = "Metadata_Plate"
WELL = "Metadata_Well"
SITE = "Metadata_Site"
KIND = "profiles"
PROFILES_FILE = "profiles.parquet"  # normalised (what the metrics read)
RAW_FILE = "profiles_raw.parquet"  # aggregated, before normalisation (what a grid over pipelines starts from)
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")


def metadata_columns(df: pd.DataFrame) -> list[str]:
    """The ``Metadata_*`` columns, in table order."""
    return [str(c) for c in df.columns if str(c).startswith(META_PREFIX)]


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Every column that is not ``Metadata_*``, in table order; a non-numeric one is a ValueError naming it."""
    features = [str(c) for c in df.columns if not str(c).startswith(META_PREFIX)]
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]
    if bad:
        raise ValueError(f"feature column(s) {bad[:5]} are not numeric ({df[bad[0]].dtype}); metadata columns "
                         f"must start with {META_PREFIX!r}, every other column is a feature")
    return features


def check_profiles(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """``df`` when it has at least one metadata and one numeric feature column; else a ValueError naming ``where``."""
    if not metadata_columns(df):
        raise ValueError(f"{where}: no {META_PREFIX}* column (columns: {', '.join(map(str, df.columns[:8]))}); "
                         f"a profiles table names its metadata {META_PREFIX}Plate, {META_PREFIX}Well, ...")
    try:
        features = feature_columns(df)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if not features:
        raise ValueError(f"{where}: no feature column (every column starts with {META_PREFIX!r})")
    return df


def read_profiles(url: str, file: str = PROFILES_FILE) -> pd.DataFrame:
    """The profiles table at ``url``: a parquet or CSV(.gz) file, or a folder of parquet parts.

    An sslray ``profiles`` folder is read at ``file`` (``profiles.parquet``, or ``RAW_FILE`` for
    the profiles before normalisation); an sslray folder without ``_SUCCESS`` (its writing marker or
    its pair of files: still being written, or interrupted) and another kind of sslray artifact are
    refused by name.
    """
    fs, path = storage.filesystem(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"no profiles table at {url} (nothing there: the path does not exist)")
    if fs.isdir(path):
        return check_profiles(_read_folder(url, file), url)
    return check_profiles(_read_file(url), url)


def _read_folder(url: str, file: str) -> pd.DataFrame:
    kind = storage.artifact_kind(url)
    if kind == KIND:
        return _read_file(storage.join(url, file))
    if kind is not None:
        raise ValueError(f"{url} is an sslray {kind.replace('_', ' ')}, not a profiles table; "
                         "`sslray profile --embeddings TABLE --out DEST` makes one from an embeddings table")
    if storage.exists(storage.join(url, storage.WRITING_MARKER)) or storage.exists(storage.join(url, RAW_FILE)):
        raise FileNotFoundError(f"profiles table {url} is incomplete (no {storage.SUCCESS_MARKER}): a `sslray profile` "
                                "was interrupted or is still running; run it again")
    fs, path = storage.filesystem(url)
    if not any(p.endswith(".parquet") for p in fs.ls(path, detail=False)):
        raise ValueError(f"{url}: a folder with no parquet file; a profiles table is a parquet file or folder, "
                         "or a CSV(.gz) file")
    return read_parquet_dir(url).to_pandas()


def _read_file(url: str) -> pd.DataFrame:
    name = url.rstrip("/").lower()
    if not name.endswith(".parquet") and not name.endswith(CSV_SUFFIXES):
        raise ValueError(f"{url}: not a profiles table (expected .parquet, .csv or .csv.gz)")
    if name.endswith(".parquet"):
        return pd.read_parquet(io.BytesIO(storage.read_bytes(url)))
    return read_csv(url)


def read_csv(url: str, **kwargs) -> pd.DataFrame:
    """A CSV file at any URL, compressed or not (by its suffix: ``.gz``, ``.bz2``, ``.zip``, ``.xz``)."""
    name = url.rstrip("/").lower()
    compression = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz"}.get(name[name.rfind("."):])
    try:
        return pd.read_csv(io.BytesIO(storage.read_bytes(url)), compression=compression, low_memory=False, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{url} is not a readable CSV: {err}") from None


def write_profiles(df: pd.DataFrame, folder: str, file: str = PROFILES_FILE) -> str:
    """Write ``df`` as ``folder/file`` (plain columns, no index), so any parquet reader takes it; returns the URL."""
    check_profiles(df, file)
    url = storage.join(folder, file)
    buffer = io.BytesIO()
    df.reset_index(drop=True).to_parquet(buffer, index=False)
    storage.write_bytes(url, buffer.getvalue())
    return url
