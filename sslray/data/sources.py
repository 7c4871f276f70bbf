"""Which sources an ingest reads: discovery under SRC, a labels CSV, channel-file fields, magnifications.

A source is one field (an image file, a folder of single-channel files, a group of channel
files or a whole slide) with its labels and extra manifest columns. SRC is a folder, or one
file that is then the only source (named by its file name, unlabelled). Only files inside SRC
are read: a labels CSV path that leaves SRC is refused (``labels_csv``), and a symlink inside
SRC that points outside it is followed but named in a warning and in ``ingest_report.json``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslray.data.labels_csv import LabelsError, read_labels_csv
from sslray.data.readers import HDF5_SUFFIXES, IMAGE_SUFFIXES
from sslray.data.wsi import SLIDE_SUFFIXES

if TYPE_CHECKING:
    from sslray.data.ingest_config import IngestConfig

log = logging.getLogger(__name__)

SOURCE_SUFFIXES = IMAGE_SUFFIXES | SLIDE_SUFFIXES | HDF5_SUFFIXES  # the files discovery reads by default


class IngestError(ValueError):
    """Ingest cannot proceed; the message names the file and the problem."""


@dataclass
class SourceImage:
    path: Path
    rel: str
    label: str | None = None
    group: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more manifest columns (CSV columns, magnification)
    channel_files: dict[str, Path] | None = None  # channel-files layout: channel key -> file


@dataclass
class IngestReport:
    n_images: int = 0
    n_tiles: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    linked_outside: list[str] = field(default_factory=list)  # sources reached through a symlink leaving SRC


def discover_sources(cfg: IngestConfig, report: IngestReport) -> list[SourceImage]:
    """The sources under SRC in path order, or SRC itself when it is one file."""
    root = Path(cfg.src)
    if root.is_file():
        sources = [single_file_source(root, cfg)]
    elif not root.is_dir():
        raise IngestError(f"source folder {root} does not exist, nor a file of that name (SRC is a folder, or "
                          "one image, slide or HDF5 file)")
    elif cfg.labels:
        try:
            sources = _sources_from_csv(root, Path(cfg.labels), cfg, report)
        except LabelsError as err:
            raise IngestError(str(err)) from None
    elif cfg.layout == "channel-files":
        sources = list(channel_file_fields(root, cfg.channel_pattern).values())
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SOURCE_SUFFIXES)
        if cfg.layout == "channel-folders":
            files = sorted({p.parent for p in files})  # every folder holding images is one field
        sources = [SourceImage(p, p.relative_to(root).as_posix(), label=_folder_label(p, root)) for p in files]
    if cfg.magnification_groups:
        sources = [s for s in sources if _add_magnification(s, cfg, report)]
    report.linked_outside = linked_outside(sources, root)
    return sources


def single_file_source(path: Path, cfg: IngestConfig) -> SourceImage:
    """SRC given as one file (a slide, a field, an HDF5 patch file) is the only source, named by
    its file name; it has no class folder, and a labels CSV (paths relative to a folder) or a
    channel layout (fields of several files) has nothing to apply to."""
    if cfg.labels:
        raise IngestError(f"{path} is a single file: --labels lists files under a source folder; give the "
                          "folder as SRC, or ingest the file without labels")
    if cfg.layout != "files":
        raise IngestError(f"{path} is a single file: layout {cfg.layout} groups several files into a field; "
                          "give their folder as SRC")
    if cfg.format == "auto" and path.suffix.lower() not in SOURCE_SUFFIXES:
        raise IngestError(f"{path}: not an image, slide or HDF5 file by its name (known: {sorted(SOURCE_SUFFIXES)}); "
                          "pass --format to read it")
    return SourceImage(path, path.name)


def linked_outside(sources: list[SourceImage], root: Path) -> list[str]:
    """Sources whose files resolve outside SRC through a symlink: followed (a symlinked data
    folder is common on shared storage) but named, so nothing is read from elsewhere unseen."""
    top = root.resolve()
    found = []
    for source in sources:
        paths = list(source.channel_files.values()) if source.channel_files else [source.path]
        if any(not p.resolve().is_relative_to(top) for p in paths):
            log.warning("%s is a symlink (or inside one) that points outside %s; reading it", source.path, root)
            found.append(source.rel)
    return found


def _folder_label(path: Path, root: Path) -> str | None:
    return path.parent.name if path.parent != root else None


def channel_file_fields(root: Path, pattern: str) -> dict[str, SourceImage]:
    """Fields of single-channel files: files whose names match ``pattern`` and differ only in
    the ``channel`` group form one field, named by the file name with the channel as ``*``."""
    regex = re.compile(pattern)
    fields: dict[str, SourceImage] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        match = regex.search(path.name)
        if match is None or match["channel"] is None:
            continue
        start, end = match.span("channel")
        rel = (path.parent / f"{path.name[:start]}*{path.name[end:]}").relative_to(root).as_posix()
        groups = {k: v for k, v in match.groupdict().items() if k != "channel" and v is not None}
        field = fields.setdefault(rel, SourceImage(path.parent, rel, _folder_label(path, root), extra=groups,
                                                   channel_files={}))
        field.channel_files[match["channel"]] = path
    return fields


def _add_magnification(source: SourceImage, cfg: IngestConfig, report: IngestReport) -> bool:
    found = magnification_field(source.rel)
    if found is None:
        fail(cfg, report, str(source.path), "no magnification in its path (want a folder such as 40X, "
                                             "or a file-name token such as _40x_)")
        return False
    source.extra["magnification"], source.extra["field_id"] = found
    parent = source.path.parent
    if not cfg.labels and Path(cfg.src).is_dir() and _MAGNIFICATION.match(parent.name):  # <class>/40X/x.png
        source.label = parent.parent.name if parent.parent != Path(cfg.src) else None
    return True


_MAGNIFICATION = re.compile(r"^(\d+(?:\.\d+)?)[xX]$")


def magnification_field(rel: str) -> tuple[float, str] | None:
    """(magnification, field id) from a BreakHis-style path, or None.

    The magnification is a ``<N>X`` folder or file-name token; the field id is the path
    with it taken out (and, in the file name, a bare ``N`` replaced by ``*``), so the same
    field at 40X, 100X, 200X and 400X shares one id: ``P1/40X/SOB-P1-40-001.png`` and
    ``P1/100X/SOB-P1-100-001.png`` are both field ``P1/SOB-P1-*-001``.
    """
    *folders, name = rel.split("/")
    stem = Path(name).stem
    magnification = None
    for i, folder in enumerate(folders):
        if match := _MAGNIFICATION.match(folder):
            magnification = float(match[1])
            folders = folders[:i] + folders[i + 1 :]
            break
    tokens = re.split(r"([-_. ])", stem)
    for i in reversed(range(len(tokens))):
        match = _MAGNIFICATION.match(tokens[i])
        if match and magnification in (None, float(match[1])):
            magnification, tokens[i] = float(match[1]), "*"
            break
        if magnification is not None and tokens[i].isdigit() and float(tokens[i]) == magnification:
            tokens[i] = "*"
            break
    if magnification is None:
        return None
    return magnification, "/".join([*folders, "".join(tokens)])


def _sources_from_csv(root: Path, csv_path: Path, cfg: IngestConfig, report: IngestReport) -> list[SourceImage]:
    """Rows of ``path,label[,group][,split][,more...]``; any further column goes to the manifest."""
    fields = channel_file_fields(root, cfg.channel_pattern) if cfg.layout == "channel-files" else {}
    sources = []
    for row in read_labels_csv(csv_path):
        path = root / row.path
        if cfg.layout == "channel-files":
            exists = row.path in fields
        else:
            exists = path.is_dir() if cfg.layout == "channel-folders" else path.is_file()
        if not exists:
            hint = f" (fields are named like {next(iter(fields))})" if fields else ""
            fail(cfg, report, str(path), f"listed in {csv_path} line {row.line} but does not exist{hint}")
            continue
        found = fields.get(row.path)
        extra = {**(found.extra if found else {}), **row.extra}
        if extra.get("magnification") is not None:
            try:
                extra["magnification"] = float(str(extra["magnification"]).rstrip("xX"))
            except ValueError:
                raise IngestError(f"labels file {csv_path} line {row.line}: magnification "
                                  f"{extra['magnification']!r} is not a number") from None
        sources.append(SourceImage(found.path if found else path, row.path, row.label, row.group, row.split, extra,
                                   found.channel_files if found else None))
    return sources


def fail(cfg: IngestConfig, report: IngestReport, path: str, reason: str, kept: int = 0) -> None:
    message = reason if reason.startswith(path) else f"{path}: {reason}"
    if cfg.on_error == "stop":
        resume = f"; the {kept} source(s) tiled so far are kept and rerunning the same command resumes" if kept else ""
        raise IngestError(f"{message} (use --on-error skip to skip bad files{resume})")
    log.warning("skipping %s", message)
    report.skipped.append({"path": path, "reason": message})
