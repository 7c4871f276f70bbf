"""Backward-compatible name: ``Selection`` (which tiles and channels a stage reads) is part of the
tile store contract and lives in ``sslray.artifacts.selection``. Re-export only."""

from sslray.artifacts.selection import Selection, SelectionError  # noqa: F401
