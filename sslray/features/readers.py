"""Tile features other tools wrote, read one slide at a time (``sslray features import``).

Users who already extracted features with HistoSSLscaling (Phikon), CLAM or TRIDENT evaluate
them with sslray without building a tile store; ``sslray.features.run`` turns the slides read
here into an embeddings table (docs/data_contracts.md, "Embeddings table"). The layouts:

- ``histossl``: ``SRC/<slide_id>/features.npy`` or ``SRC/<slide_id>.npy``, a float array
  (N, 3 + d) whose first three columns are level, x, y.
- ``h5`` (CLAM, TRIDENT): ``SRC/*.h5``, also under ``h5_files/`` or one ``features_*/`` folder,
  with datasets ``features`` (N, d) or (1, N, d) and ``coords`` (N, 2) x, y; a ``patch_level``
  attribute gives ``level``. The slide id is the file stem.
- ``table``: parquet or CSV files whose numeric columns (or those starting with
  ``feature_prefix``) are the features; the slide id is the ``slide_id_column`` or the file stem.

Every reader names the file in its errors, so one bad slide among thousands is found at once.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from sslray import storage
from sslray.artifacts.embeddings import GROUP_COLUMNS, ID_COLUMNS

FORMATS = ("histossl", "h5", "table")
PATTERNS = {
    "histossl": ("*.npy", "*/features.npy"),
    "h5": ("*.h5", "h5_files/*.h5", "features_*/*.h5"),
    "table": ("*.parquet", "*.csv"),
}
SUFFIXES = {"histossl": (".npy",), "h5": (".h5",), "table": (".parquet", ".csv")}
KNOWN_COLUMNS = frozenset(ID_COLUMNS) | frozenset(GROUP_COLUMNS)  # never features, even when numeric
PATCH_LEVEL = "patch_level"  # CLAM's attribute of the pyramid level the patches were cut at


@dataclass
class Slide:
    """One slide's tiles: its id, the file it came from, (N, d) features and positions when known."""

    slide_id: str
    path: str  # the file, as messages name it
    source: str  # the file relative to SRC (the table's ``source`` column)
    features: np.ndarray
    coords: dict[str, np.ndarray] = field(default_factory=dict)  # x, y, level


@dataclass(frozen=True)
class Source:
    """SRC on its filesystem (local or object storage): one folder of feature files, or one file."""

    url: str
    fs: object
    root: str

    @classmethod
    def open(cls, url: str) -> Source:
        fs, root = storage.filesystem(url)
        if not fs.exists(root):
            raise FileNotFoundError(f"SRC {url} does not exist")
        return cls(url, fs, root.rstrip("/"))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.root))

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in self.fs.glob(f"{self.root}/{pattern}") if self.fs.isfile(p))

    def relative(self, path: str) -> str:
        return posixpath.basename(path) if path == self.root else posixpath.relpath(path, self.root)

    def name(self, path: str) -> str:
        """``path`` as the user would write it (SRC plus the file's place in it)."""
        return self.url if path == self.root else storage.join(self.url, self.relative(path))


def feature_files(src: Source, fmt: str) -> list[str]:
    """The files of layout ``fmt`` in SRC; h5 files spread over several extractor folders are refused."""
    if src.is_file():
        return [src.root] if src.root.lower().endswith(SUFFIXES[fmt]) else []
    files = sorted({p for pattern in PATTERNS[fmt] for p in src.glob(pattern)})
    folders = sorted({posixpath.dirname(src.relative(p)) or "." for p in files})
    if fmt == "h5" and len(folders) > 1:
        raise ValueError(f"{src.url} holds h5 features in several folders ({', '.join(folders)}), e.g. from "
                         "several extractors; pass the one folder to import as SRC")
    return files


def detect_format(src: Source) -> str:
    """The one layout SRC holds; none or several is an error saying what was looked for."""
    found = [fmt for fmt in FORMATS if feature_files(src, fmt)]
    if len(found) > 1:
        raise ValueError(f"{src.url} holds files of several layouts ({', '.join(found)}); choose one with format=")
    if not found:
        looked = "; ".join(f"{fmt}: {', '.join(PATTERNS[fmt])}" for fmt in FORMATS)
        raise FileNotFoundError(f"no feature files in {src.url} (looked for {looked})")
    return found[0]


def read_slides(src: Source, fmt: str, files: list[str], slide_id_column: str = "slide_id",
                feature_prefix: str = "") -> Iterator[Slide]:
    """Every slide in ``files``, read one file at a time (memory holds one file, not SRC)."""
    for path in files:
        if fmt == "histossl":
            yield read_histossl(src, path)
        elif fmt == "h5":
            yield read_h5(src, path)
        else:
            yield from read_table(src, path, slide_id_column, feature_prefix)


def read_histossl(src: Source, path: str) -> Slide:
    """``features.npy``: (N, 3 + d), columns level, x, y, then the features."""
    name = src.name(path)
    try:
        with src.fs.open(path, "rb") as handle:
            array = np.load(handle, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{name}: not a readable .npy array ({err})") from None
    if array.ndim != 2 or array.shape[1] < 4:
        raise ValueError(f"{name}: expected a (N, 3 + d) array (level, x, y, then d >= 1 features, as "
                         f"HistoSSLscaling writes), got shape {array.shape}")
    stem = posixpath.basename(path)
    slide_id = posixpath.basename(posixpath.dirname(path)) if stem == "features.npy" else stem[: -len(".npy")]
    coords = {"level": array[:, 0], "x": array[:, 1], "y": array[:, 2]}
    return Slide(slide_id, name, src.relative(path), check_features(array[:, 3:], name), coords)


def read_h5(src: Source, path: str) -> Slide:
    """A CLAM / TRIDENT ``.h5``: ``features`` (N, d) or (1, N, d), ``coords`` (N, 2), ``patch_level``."""
    import h5py

    name = src.name(path)
    try:
        with src.fs.open(path, "rb") as handle, h5py.File(handle, "r") as h5:
            if "features" not in h5:
                raise ValueError(f"{name}: no 'features' dataset (it holds: {', '.join(h5.keys()) or 'nothing'})")
            features = _squeezed(np.asarray(h5["features"][()]), name, "features")
            coords = _squeezed(np.asarray(h5["coords"][()]), name, "coords") if "coords" in h5 else None
            level = _patch_level(h5)
    except OSError as err:
        raise ValueError(f"{name}: not a readable HDF5 file ({err})") from None
    found = _h5_coords(coords, level, len(features), name)
    return Slide(posixpath.basename(path)[: -len(".h5")], name, src.relative(path), check_features(features, name),
                 found)


def _squeezed(array: np.ndarray, name: str, what: str) -> np.ndarray:
    """(1, N, k) -> (N, k): TRIDENT and some CLAM versions keep a batch axis."""
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{name}: dataset {what!r} has shape {array.shape}; expected (N, k) or (1, N, k)")
    return array


def _patch_level(h5) -> int | None:
    for node in (h5.get("coords"), h5.get("features"), h5):
        if node is not None and PATCH_LEVEL in node.attrs:
            return int(np.asarray(node.attrs[PATCH_LEVEL]).reshape(-1)[0])
    return None


def _h5_coords(coords: np.ndarray | None, level: int | None, n: int, name: str) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    if coords is not None:
        if coords.shape != (n, 2):
            raise ValueError(f"{name}: 'coords' has shape {coords.shape} but 'features' has {n} rows; "
                             f"expected ({n}, 2) x, y")
        found.update(x=coords[:, 0], y=coords[:, 1])
    if level is not None:
        found["level"] = np.full(n, level, dtype=np.int64)
    return found


def read_table(src: Source, path: str, slide_id_column: str, feature_prefix: str) -> Iterator[Slide]:
    """A parquet or CSV file: one slide per ``slide_id_column`` value, or the whole file if it has none."""
    name = src.name(path)
    table = _load_table(src, path, slide_id_column, name)
    columns = table_feature_columns(table, slide_id_column, feature_prefix, name)
    features = check_features(np.column_stack([_numbers(table, c) for c in columns]), name)
    coords = {c: _numbers(table, c) for c in ("x", "y", "level") if c in table.column_names}
    if slide_id_column not in table.column_names:
        stem = posixpath.basename(path).rsplit(".", 1)[0]
        yield Slide(stem, name, src.relative(path), features, coords)
        return
    ids = table.column(slide_id_column)
    if ids.null_count:
        raise ValueError(f"{name}: column {slide_id_column!r} has {ids.null_count} empty slide ids")
    ids = np.asarray(ids.cast(pa.string()).to_pylist(), dtype=object)
    uniques, first, inverse, counts = np.unique(ids, return_index=True, return_inverse=True, return_counts=True)
    by_slide = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])  # rows in file order
    for k in np.argsort(first):  # slides in the order the file lists them
        rows = by_slide[k]
        yield Slide(str(uniques[k]), name, src.relative(path), features[rows],
                    {c: v[rows] for c, v in coords.items()})


def _load_table(src: Source, path: str, slide_id_column: str, name: str) -> pa.Table:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        with src.fs.open(path, "rb") as handle:
            if path.lower().endswith(".csv"):
                ids_as_text = pacsv.ConvertOptions(column_types={slide_id_column: pa.string()})
                return pacsv.read_csv(handle, convert_options=ids_as_text)
            return pq.read_table(handle)
    except (OSError, pa.ArrowInvalid) as err:
        raise ValueError(f"{name}: not a readable table ({err})") from None


def table_feature_columns(table: pa.Table, slide_id_column: str, feature_prefix: str, name: str) -> list[str]:
    """The feature columns: those starting with ``feature_prefix``, else every numeric column that is
    not an id column sslray knows (x, y, level, label, patient_id...) nor a saved pandas index."""
    if feature_prefix:
        columns = [c for c in table.column_names if c.startswith(feature_prefix)]
        other = [c for c in columns if not _is_number(table.schema.field(c).type)]
        if other:
            raise ValueError(f"{name}: feature column(s) {other[:5]} are not numeric")
    else:
        skip = KNOWN_COLUMNS | {slide_id_column}
        columns = [c for c in table.column_names if c not in skip and not _is_index(c)
                   and _is_number(table.schema.field(c).type)]
    if not columns:
        how = f"starting with {feature_prefix!r}" if feature_prefix else "numeric, other than id columns"
        raise ValueError(f"{name}: no feature columns ({how}); columns: {', '.join(table.column_names[:20])}")
    return columns


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _is_index(column: str) -> bool:
    return column == "" or column.startswith(("Unnamed:", "__index_level_"))


def _numbers(table: pa.Table, column: str) -> np.ndarray:
    """A numeric column as numpy; empty cells become NaN (refused for features, kept for positions)."""
    values = table.column(column)
    if not _is_number(values.type):
        raise ValueError(f"column {column!r} is {values.type}, not numeric")
    return values.to_numpy() if not values.null_count else values.cast(pa.float64()).fill_null(np.nan).to_numpy()


def check_features(features: np.ndarray, name: str) -> np.ndarray:
    """(N, d) numeric and finite -> float32; the error names the file and how many rows are bad."""
    if features.ndim != 2 or features.shape[1] < 1:
        raise ValueError(f"{name}: features have shape {features.shape}; expected (N, d) with d >= 1")
    if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
        raise ValueError(f"{name}: features are {features.dtype}, not numbers")
    features = features.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if len(bad):
        raise ValueError(f"{name}: {len(bad)} of {len(features)} rows hold NaN or inf features "
                         f"(first at row {bad[0]})")
    return features
