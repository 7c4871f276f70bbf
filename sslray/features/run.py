"""``sslray features import SRC OUT``: another tool's tile features -> a published embeddings table.

The stage lifecycle of every sslray stage (``sslray.stage``): SRC, the destination and the
tracking server are checked before any work, the run is tracked (``import <table>``, nested
under a pipeline's run), and the table is built in staging and published atomically, so a
failure halfway (a corrupt slide) leaves no table and an earlier one untouched. Slides stream
one file at a time into parquet parts of about ``rows_per_part`` rows.

The table is the one ``sslray embed`` writes (docs/data_contracts.md, "Embeddings table"):
``slide_id``, ``image_id`` (= ``slide_id``), ``tile_id`` (``<slide_id>:<row>``), ``source``,
``x``/``y``/``level`` when the layout has them, the ``metadata`` CSV's columns, ``embedding`` and
``checkpoint`` (``imported:<format>:<SRC>``). The embeddings are NOT re-normalised: they keep the
values the tool wrote (``_SUCCESS`` says ``l2_normalized: false``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from sslray import storage, tracking
from sslray.artifacts.embeddings import CHECKPOINT, KIND, carried_columns, embeddings_batch
from sslray.artifacts.vector_table import EMBEDDING
from sslray.config import to_dict
from sslray.features.readers import FORMATS, Slide, Source, detect_format, feature_files, read_slides
from sslray.stage import input_name, publishing, tracked_run

log = logging.getLogger(__name__)

WHAT = "embeddings table"
GENERATED = ("tile_id", "source", "image_id", "x", "y", "level", "slide_id", EMBEDDING, CHECKPOINT)
SHOWN = 10  # slide ids a warning lists


@dataclass
class ImportConfig:
    """``sslray features import``: feature files of another tool -> an embeddings table."""

    src: str = ""  # a folder (or one file) of per-slide features: see sslray/features/readers.py
    out: str = ""  # the embeddings table (the published output)
    format: str = "auto"  # auto | histossl | h5 | table
    metadata: str = ""  # optional CSV keyed by slide_id; its other columns join onto every tile
    slide_id_column: str = "slide_id"  # tables: the column naming each row's slide (else the file stem)
    feature_prefix: str = ""  # tables: feature columns start with this (default: every numeric column)
    rows_per_part: int = 4096  # slides are gathered into parquet parts of about this many rows
    name: str = ""  # what the MLflow run calls the table (``import NAME``); default: OUT's folder name
    overwrite: bool = False
    run_dir: str = "sslray-runs"  # where the default (SQLite) MLflow store lives
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    def __post_init__(self) -> None:
        missing = [key for key in ("src", "out", "slide_id_column") if not getattr(self, key)]
        if missing:
            raise ValueError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
        if self.format not in ("auto", *FORMATS):
            raise ValueError(f"format must be auto or one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.rows_per_part < 1:
            raise ValueError(f"rows_per_part must be >= 1, got {self.rows_per_part}")


@dataclass
class Metadata:
    """The metadata CSV: one row per slide, looked up by slide id."""

    url: str
    table: pa.Table  # without the slide_id column
    rows: dict[str, int]

    def columns(self, slide_id: str, n: int) -> dict[str, pa.Array]:
        """The slide's row repeated ``n`` times (nulls for a slide the CSV does not list)."""
        row = self.rows.get(slide_id)
        if row is None:
            return {f.name: pa.nulls(n, f.type) for f in self.table.schema}
        taken = self.table.take(pa.array(np.full(n, row, dtype=np.int64)))
        return {name: taken.column(name).combine_chunks() for name in self.table.column_names}


def run_import(cfg: ImportConfig) -> str:
    """Import every slide of ``cfg.src`` into the embeddings table ``cfg.out``; returns its URL."""
    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before any work
    storage.check_destination(cfg.out, KIND, WHAT, cfg.overwrite)
    src = Source.open(cfg.src)
    fmt = detect_format(src) if cfg.format == "auto" else cfg.format
    files = feature_files(src, fmt)
    if not files:
        raise FileNotFoundError(f"no {fmt} feature files in {cfg.src}")
    metadata = read_metadata(cfg.metadata) if cfg.metadata else None
    description = f"imported:{fmt}:{tracking.redact(storage.local_path(cfg.src))}"
    tags = {"sslray.source": tracking.redact(cfg.src), "sslray.format": fmt, "sslray.checkpoint": description,
            "sslray.embeddings": tracking.redact(cfg.out)}
    with tracked_run(cfg.tracking, cfg.run_dir, stage="import", input=cfg.name or input_name(cfg.out),
                     config=to_dict(cfg), tags=tags) as run, \
            publishing(cfg.out, kind=KIND, what=WHAT, overwrite=cfg.overwrite) as output:
        started = time.perf_counter()
        slides = read_slides(src, fmt, files, cfg.slide_id_column, cfg.feature_prefix)
        parts = write_slides(slides, output.staging, description, metadata, cfg.rows_per_part)
        if metadata is not None:
            warn_unmatched(metadata, parts.slides)
        output.info.update({"checkpoint": description, "source": tracking.redact(cfg.src), "format": fmt,
                            "n_rows": parts.n_rows, "n_slides": parts.n_slides, "dim": parts.dim,
                            "l2_normalized": False, "metadata": tracking.redact(cfg.metadata) or None,
                            "mlflow_run_id": run.run_id})
    run.log_metrics({"n_rows": parts.n_rows, "n_slides": parts.n_slides, "dim": parts.dim,
                     "n_parts": parts.n_parts, "seconds": time.perf_counter() - started})
    return cfg.out


class Parts:
    """The table's parquet parts: slides gathered until ``rows_per_part``, every part with the first
    slide's schema; the checks that span slides (unique ids, one width) live here."""

    def __init__(self, staging: str, rows_per_part: int) -> None:
        self.fs, self.root = storage.filesystem(staging)
        self.rows_per_part = rows_per_part
        self.buffer: list[pa.Table] = []
        self.slides: dict[str, str] = {}  # slide id -> the file it came from (empty slides too)
        self.empty: list[str] = []  # slides without tiles, left out
        self.schema: pa.Schema | None = None
        self.first = ""  # the file that fixed the schema and the width
        self.dim = 0
        self.n_rows = self.n_parts = 0

    @property
    def n_slides(self) -> int:
        return len(self.slides) - len(self.empty)

    def check(self, slide: Slide) -> None:
        if slide.slide_id in self.slides:
            raise ValueError(f"slide {slide.slide_id!r} appears twice: in {self.slides[slide.slide_id]} and in "
                             f"{slide.path}")
        width = slide.features.shape[1]
        if self.dim and width != self.dim:
            raise ValueError(f"{slide.path} has {width} features per tile but {self.first} has {self.dim}; "
                             "every slide must come from the same extractor")
        self.slides[slide.slide_id] = slide.path

    def add(self, rows: pa.Table, path: str) -> None:
        if self.schema is None:
            self.schema, self.first, self.dim = rows.schema, path, rows.schema.field(EMBEDDING).type.list_size
        self.buffer.append(conform(rows, self.schema, path, self.first))
        self.n_rows += rows.num_rows
        if sum(t.num_rows for t in self.buffer) >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        import pyarrow.parquet as pq

        if not self.buffer:
            return
        table = pa.concat_tables(self.buffer).unify_dictionaries()
        pq.write_table(table, f"{self.root}/part-{self.n_parts:06d}.parquet", filesystem=self.fs)
        self.buffer, self.n_parts = [], self.n_parts + 1


def write_slides(slides, staging: str, description: str, metadata: Metadata | None, rows_per_part: int) -> Parts:
    """Write every slide's rows under ``staging``; an empty slide is skipped with a warning."""
    parts = Parts(staging, rows_per_part)
    for slide in slides:
        parts.check(slide)
        if not len(slide.features):
            log.warning("%s: no tiles; slide %s is left out", slide.path, slide.slide_id)
            parts.empty.append(slide.slide_id)
            continue
        parts.add(slide_rows(slide, description, metadata), slide.path)
    parts.flush()
    if not parts.n_rows:
        raise ValueError(f"no tiles in any of the {len(parts.slides)} feature file(s)")
    return parts


def slide_rows(slide: Slide, description: str, metadata: Metadata | None) -> pa.Table:
    """One slide's rows of the embeddings table, the features as the tool wrote them (as float32)."""
    n = len(slide.features)
    ids = np.full(n, slide.slide_id, dtype=object)
    columns = {"tile_id": np.array([f"{slide.slide_id}:{i}" for i in range(n)], dtype=object),
               "source": np.full(n, slide.source, dtype=object), "image_id": ids, "slide_id": ids,
               **{k: positions(v) for k, v in slide.coords.items()}}
    rows = embeddings_batch({c: columns[c] for c in carried_columns(list(columns))}, slide.features, description)
    for name, values in (metadata.columns(slide.slide_id, n) if metadata else {}).items():
        rows = rows.add_column(rows.schema.get_field_index(EMBEDDING), name, values)
    return rows


def positions(values: np.ndarray) -> np.ndarray:
    """Positions as int64 when they are whole numbers (HistoSSLscaling stores them as floats), else float64."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    values = values.astype(np.float64)
    whole = np.isfinite(values).all() and bool((values == np.round(values)).all())
    return values.astype(np.int64) if whole else values


def conform(rows: pa.Table, schema: pa.Schema, path: str, first: str) -> pa.Table:
    """``rows`` with the table's schema: a column the first slide lacks is refused, one it has and
    this slide lacks is empty, and types are cast (whole-number positions to float, say)."""
    extra = [c for c in rows.column_names if c not in schema.names]
    if extra:
        raise ValueError(f"{path} has column(s) {extra} that {first} (the first slide) lacks")
    for f in schema:
        if f.name not in rows.column_names:
            rows = rows.append_column(f.name, pa.nulls(rows.num_rows, f.type))
    try:
        return rows.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
        raise ValueError(f"{path}: its columns do not match those of {first} ({err})") from None


def read_metadata(url: str) -> Metadata:
    """The metadata CSV: a ``slide_id`` column (read as text) with one row per slide."""
    import io

    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(io.BytesIO(storage.read_bytes(url)),
                               convert_options=pacsv.ConvertOptions(column_types={"slide_id": pa.string()}))
    except pa.ArrowInvalid as err:
        raise ValueError(f"metadata {url}: not a readable CSV ({err})") from None
    if "slide_id" not in table.column_names:
        raise ValueError(f"metadata {url}: no slide_id column (columns: {', '.join(table.column_names)})")
    clash = [c for c in table.column_names if c in GENERATED and c != "slide_id"]
    if clash:
        raise ValueError(f"metadata {url}: column(s) {clash} are written by the import itself; rename them")
    ids = table.column("slide_id").to_pylist()
    if None in ids:
        raise ValueError(f"metadata {url}: {ids.count(None)} row(s) have no slide_id")
    rows: dict[str, int] = {}
    for i, slide_id in enumerate(ids):
        if slide_id in rows:
            raise ValueError(f"metadata {url}: slide {slide_id!r} has two rows ({rows[slide_id] + 2} and {i + 2})")
        rows[slide_id] = i
    return Metadata(url, table.drop_columns(["slide_id"]), rows)


def warn_unmatched(metadata: Metadata, slides: dict[str, str]) -> None:
    """Slides the CSV lists without features, and feature files without a CSV row: warnings listing them."""
    no_features = [s for s in metadata.rows if s not in slides]
    no_row = [s for s in slides if s not in metadata.rows]
    if no_features:
        log.warning("metadata %s lists %d slide(s) without features (left out): %s", metadata.url,
                    len(no_features), _listed(no_features))
    if no_row:
        log.warning("%d slide(s) have no row in metadata %s (their metadata columns are empty): %s",
                    len(no_row), metadata.url, _listed(no_row))


def _listed(ids: list[str]) -> str:
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return ", ".join(ids[:SHOWN]) + more
