"""Checks on an embeddings table before a probe starts: which column groups the splits, and
whether the labels can be split at all.

Both run before Ray Tune starts, so a table that cannot be probed fails in one line naming the
table, the column and the class counts, instead of a grid of failed trials ending in a raw
scikit-learn error. No Ray import.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from sslray.evaluate.linear_probe import Split, grouped_split

log = logging.getLogger(__name__)

AUTO_GROUP_COLUMNS = ("group", "image_id")
"""``group_column`` unset: the ingest's ``group`` column (patient, slide or field id) when every
labelled tile has one, else ``image_id`` (tiles of one image never straddle a split)."""

MIN_UNITS_PER_CLASS = 3
"""A class needs one group (or tile) in each of test, validation and training."""


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
