"""The labels CSV of ``sslray ingest --labels``: ``path,label[,group][,split][,more...]``.

It is read whole and checked before any image is opened, because its mistakes are silent
otherwise: a path listed twice becomes duplicated tiles (and, with two labels, one label
wins), and a path that leaves SRC (``../x.png``, ``/etc/...``) would read any image on the
machine into the store. Every refusal names the file, the line and the path.
"""

from __future__ import annotations

import csv
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

CORE_COLUMNS = ("path", "label", "group", "split")
RESERVED = {"tile_id", "source", "image_id", "x", "y", "level", "mpp", "tissue_fraction", "slide_id"}


class LabelsError(ValueError):
    """The labels CSV cannot be used; the message names the file, the line and the problem."""


@dataclass
class LabelRow:
    line: int  # 1-based line number in the CSV (the header is line 1)
    path: str  # normalised, relative to SRC
    label: str | None
    group: str | None
    split: str | None
    extra: dict[str, str | None] = field(default_factory=dict)  # further columns, for the manifest


def read_labels_csv(csv_path: Path) -> list[LabelRow]:
    """Every row of the CSV, checked: UTF-8, the needed columns, at least one row, each path
    inside SRC and listed once."""
    columns, rows = _read_rows(csv_path)
    extra_columns = [c for c in columns if c not in CORE_COLUMNS]
    parsed = [
        LabelRow(line, inside_source(row["path"], csv_path, line), row["label"] or None, row.get("group") or None,
                 row.get("split") or None, {c: row[c] or None for c in extra_columns})
        for line, row in rows
    ]
    _refuse_duplicates(parsed, csv_path)
    return parsed


def _read_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    if not csv_path.is_file():
        raise LabelsError(f"labels file {csv_path} does not exist")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:  # -sig: Excel's byte-order mark
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as err:
        raise LabelsError(f"labels file {csv_path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start}); save it as UTF-8 (e.g. 'CSV UTF-8' in Excel, or iconv -f latin1 -t utf-8)"
                          ) from None
    missing = [c for c in ("path", "label") if c not in columns]
    if missing:
        raise LabelsError(f"labels file {csv_path}: missing column(s) {missing} (has {columns}); "
                          "need path,label[,group][,split]")
    if clash := sorted(RESERVED & set(columns)):
        raise LabelsError(f"labels file {csv_path}: column(s) {clash} are set by sslray; rename them")
    if not rows:
        raise LabelsError(f"labels file {csv_path} lists no images: it has a header ({','.join(columns)}) "
                          "but no rows")
    for line, row in rows:
        if not (row.get("path") or "").strip():
            raise LabelsError(f"labels file {csv_path} line {line}: empty path")
    return columns, rows


def inside_source(path: str, csv_path: Path, line: int) -> str:
    """``path`` normalised relative to SRC; refused when it is absolute or climbs out of SRC.

    The check is lexical: a symlink inside SRC that points elsewhere is the user's own
    choice and is followed (with a warning, see ``sources.linked_outside``).
    """
    text = path.strip().replace("\\", "/")
    normal = posixpath.normpath(text)
    if text.startswith("/") or Path(text).is_absolute() or normal == ".." or normal.startswith("../"):
        raise LabelsError(f"labels file {csv_path} line {line}: path {path!r} is outside the source folder; "
                          "sslray reads only files inside SRC (paths in the CSV are relative to SRC)")
    return normal


def _refuse_duplicates(rows: list[LabelRow], csv_path: Path) -> None:
    first: dict[str, LabelRow] = {}
    for row in rows:
        earlier = first.setdefault(row.path, row)
        if earlier is row:
            continue
        labels = "" if earlier.label == row.label else f" with two labels ({earlier.label!r} and {row.label!r})"
        raise LabelsError(f"labels file {csv_path}: {row.path!r} is listed twice{labels}, on lines {earlier.line} "
                          f"and {row.line}; list each image once")
