"""An embeddings table read for a tile-level probe (linear, kNN), checked before the probe starts:
which column groups the splits, whether the labels can be split at all, and the image and patient
ids the image- and patient-level accuracies need.

The checks run before Ray Tune starts, so a table that cannot be probed fails in one line naming
the table, the column and the class counts, instead of a grid of failed trials ending in a raw
scikit-learn error. No Ray import.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sslray.artifacts import PROBE_TABLES
from sslray.artifacts.vector_table import VectorTable
from sslray.evaluate.linear_probe import Split, grouped_split
from sslray.evaluate.tile_scores import TilePredictions
from sslray.stage import input_name

log = logging.getLogger(__name__)

AUTO_GROUP_COLUMNS = ("group", "image_id")
"""``group_column`` unset: the ingest's ``group`` column (patient, slide or field id) when every
labelled tile has one, else ``image_id`` (tiles of one image never straddle a split)."""

MIN_UNITS_PER_CLASS = 3
"""A class needs one group (or tile) in each of test, validation and training."""

IMAGE_COLUMN, PATIENT_COLUMN = "image_id", "patient_id"


@dataclass
class ProbeSettings:
    """The config keys every tile-level probe (linear, kNN) shares: the table, where results go and
    how it is split; each protocol's config adds its own keys after these."""

    embeddings: str = ""
    run_dir: str = "sslray-runs"  # Tune's trials, the results and the default MLflow store
    name: str = ""  # what the run calls the input (``evaluate NAME``); default: the table's folder name
    label_column: str = "label"
    group_column: str | None = None  # None: "group" if filled, else image_id (printed); a named one must exist
    test_fraction: float = 0.25
    val_fraction: float = 0.2
    seed: int = 0  # the splits', the subsamples' and the bootstrap's

    def __post_init__(self) -> None:
        if not self.embeddings:
            raise ValueError("embeddings: the embeddings table URL is required")
        for key in ("test_fraction", "val_fraction"):
            if not 0 < getattr(self, key) < 1:
                raise ValueError(f"{key} must be in (0, 1), got {getattr(self, key)}")

    @property
    def input_name(self) -> str:
        return self.name or input_name(self.embeddings)


@dataclass
class ProbeData:
    """The labelled tiles of a table: features, string labels, the split's groups, image and patient ids."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    group_column: str | None
    images: np.ndarray | None = None  # image_id, when every labelled tile has one
    patients: np.ndarray | None = None  # patient_id, likewise; None: no image/patient-level accuracy

    @property
    def classes(self) -> list[str]:
        return np.unique(self.labels).tolist()

    def targets(self) -> np.ndarray:
        """The labels as indices into ``classes``."""
        return np.unique(self.labels, return_inverse=True)[1]

    def predictions(self, rows: np.ndarray, proba: np.ndarray) -> TilePredictions:
        """``proba`` (one row per tile of ``rows``, one column per class) with those tiles' targets and ids."""
        return TilePredictions(self.targets()[rows], proba, _take(self.images, rows), _take(self.patients, rows))

    def bootstrap_units(self, rows: np.ndarray) -> np.ndarray | None:
        """What a bootstrap resamples among ``rows``: patients, else the split's groups, else tiles."""
        return _take(self.patients if self.patients is not None else self.groups, rows)

    def pictures(self, pred: TilePredictions, prefix: str) -> Callable[[str], None]:
        """``publish_results``' pictures: ROC and confusion matrix of the test predictions ``pred``, and
        the map of every probed tile's embedding by label and group (``pictures.draw_tile_pictures``)."""

        def draw(folder: str) -> None:
            from sslray.evaluate.pictures import draw_tile_pictures  # matplotlib and torch: only when drawing

            draw_tile_pictures(self.features, self.labels, self.groups, pred.targets, pred.proba, self.classes,
                               folder, prefix=prefix)

        return draw


def split_facts(data: ProbeData, outer: Split, cfg: ProbeSettings) -> dict:
    """How the test scores were made, for results.json: split sizes, grouping and the bootstrap unit."""
    unit = PATIENT_COLUMN if data.patients is not None else data.group_column or "tile"
    return {"n_train": int(len(outer.train)), "n_test": int(len(outer.test)), "grouped_by": data.group_column,
            "test_fraction": cfg.test_fraction, "val_fraction": cfg.val_fraction, "seed": cfg.seed,
            "bootstrap_unit": unit}


def _take(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if values is None else values[rows]


def load_probe_data(cfg: ProbeSettings) -> ProbeData:
    """The labelled tiles of ``cfg.embeddings``; unlabelled tiles are dropped, bad labels refused."""
    vectors = VectorTable.read_any(cfg.embeddings, PROBE_TABLES)  # also plain parquet; names a tile store or typo
    table = vectors.table
    if cfg.label_column not in table.column_names:
        raise KeyError(f"{cfg.embeddings}: no label column {cfg.label_column!r} (columns: {table.column_names})")
    labels = np.asarray(table.column(cfg.label_column).to_pylist(), dtype=object)
    keep = np.array([v is not None and v == v for v in labels])  # unlabelled tiles are not probed
    if keep.sum() == 0:
        raise ValueError(f"{cfg.embeddings}: column {cfg.label_column!r} holds no labels")
    where = f"embeddings table {cfg.embeddings}"
    group_col = resolve_group_column(table, cfg.group_column, keep, where)
    groups = _column(table, group_col, keep) if group_col else None
    check_classes(labels[keep].astype(str), groups, where, cfg.label_column, group_col)
    patients = _column(table, PATIENT_COLUMN, keep) if _filled(table, PATIENT_COLUMN, keep) else None
    if patients is None and PATIENT_COLUMN in table.column_names:
        log.info("%s: %r is empty for some labelled tiles; no image- or patient-level accuracy", where, PATIENT_COLUMN)
    images = _column(table, IMAGE_COLUMN, keep) if _filled(table, IMAGE_COLUMN, keep) else None
    return ProbeData(vectors.matrix()[keep].astype(np.float32), labels[keep].astype(str), groups, group_col,
                     images, patients)


def _column(table, name: str, keep: np.ndarray) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist(), dtype=object)[keep]


def resolve_group_column(table, requested: str | None, keep: np.ndarray, where: str) -> str | None:
    """The column whose values group the splits; an explicitly requested one must exist and be
    filled for every labelled tile, because silently grouping by another column would let one
    patient's tiles sit on both sides of the split."""
    if requested is not None:
        _check_filled(table, requested, keep, where)
        return requested
    for name in AUTO_GROUP_COLUMNS:
        if _filled(table, name, keep):
            if name != AUTO_GROUP_COLUMNS[0]:
                log.warning("%s: no %r column with a value for every labelled tile; grouping the probe's splits by "
                            "%r instead (set group_column=<column> to keep patients or slides apart)",
                            where, AUTO_GROUP_COLUMNS[0], name)
            return name
    log.warning("%s: neither %s has a value for every labelled tile; splitting tile by tile (set "
                "group_column=<column> to keep patients, slides or images apart)", where,
                " nor ".join(repr(c) for c in AUTO_GROUP_COLUMNS))
    return None


def _filled(table, name: str, keep: np.ndarray) -> bool:
    if name not in table.column_names:
        return False
    return not any(v is None for v in np.asarray(table.column(name).to_pylist(), dtype=object)[keep])


def _check_filled(table, name: str, keep: np.ndarray, where: str) -> None:
    if name not in table.column_names:
        raise ValueError(f"{where}: group_column {name!r} is not a column of the table (columns: "
                         f"{', '.join(table.column_names)}); name one of them, or leave group_column unset to "
                         f"group by {' (if filled) or '.join(map(repr, AUTO_GROUP_COLUMNS))}")
    values = np.asarray(table.column(name).to_pylist(), dtype=object)[keep]
    empty = sum(v is None for v in values)
    if empty:
        raise ValueError(f"{where}: group_column {name!r} is empty for {empty} of {len(values)} labelled tiles; "
                         "fill it for every labelled tile or choose another group_column")


def check_classes(labels: np.ndarray, groups: np.ndarray | None, where: str, label_column: str,
                  group_column: str | None) -> None:
    """Refuse labels a probe cannot split: one class, or a class with fewer than
    ``MIN_UNITS_PER_CLASS`` groups (tiles, without groups)."""
    counts = class_counts(labels, groups)
    unit = f"{group_column!r} groups" if groups is not None else "tiles"
    detail = f"class counts: {_describe(counts, groups is not None)}"
    if len(counts) < 2:
        raise ValueError(f"{where}: column {label_column!r} has a single class; a probe needs at least 2 ({detail})")
    small = [c for c, (_, n_units) in counts.items() if n_units < MIN_UNITS_PER_CLASS]
    if small:
        raise ValueError(f"{where}: class(es) {', '.join(map(repr, small))} of column {label_column!r} have fewer than "
                         f"{MIN_UNITS_PER_CLASS} {unit}, too few for a test, validation and training split; add "
                         f"data, merge or drop those classes ({detail})")


def class_counts(labels: np.ndarray, groups: np.ndarray | None) -> dict[str, tuple[int, int]]:
    """Per class: (tiles, distinct groups); without groups every tile is its own group."""
    tiles = Counter(map(str, labels))
    if groups is None:
        return {c: (n, n) for c, n in sorted(tiles.items())}
    units = Counter(c for c, _ in {(str(c), g) for c, g in zip(labels, groups)})
    return {c: (n, units[c]) for c, n in sorted(tiles.items())}


def _describe(counts: dict[str, tuple[int, int]], grouped: bool, limit: int = 10) -> str:
    items = [f"{c}: {n} tiles" + (f" in {u} groups" if grouped else "") for c, (n, u) in counts.items()]
    return ", ".join(items[:limit]) + (f", ... ({len(items)} classes)" if len(items) > limit else "")


def probe_splits(labels: np.ndarray, groups: np.ndarray | None, test_fraction: float, val_fraction: float,
                 seed: int, where: str) -> tuple[Split, Split]:
    """(outer train/test, inner train/validation as indices into the whole table); a split that
    leaves the inner training part a single class is refused here, not in every Tune trial."""
    try:
        outer = grouped_split(labels, groups, test_fraction, seed)
        train_groups = groups[outer.train] if groups is not None else None
        inner_local = grouped_split(labels[outer.train], train_groups, val_fraction, seed + 1)
    except ValueError as err:
        raise ValueError(f"{where}: cannot split the labels: {err}") from None
    inner = Split(outer.train[inner_local.train], outer.train[inner_local.test])
    if len(np.unique(labels[inner.train])) < 2:
        raise ValueError(f"{where}: the training split holds a single class; use more groups per class "
                         f"(class counts: {_describe(class_counts(labels, groups), groups is not None)})")
    return outer, inner
